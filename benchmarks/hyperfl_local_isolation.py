"""What HyperFL's own protocol (the ``local`` setting) gives away of the round's fc1 inputs. A measurement.

The evidence behind the analytic attack's rows on ``configs/hyperfl-local.toml``. In the ``local``
setting the server sees the hypernetwork's update after the client's round over two mini-batches of
one example each. For every generated tensor k the generator head's bias update is −lr × (momentum-
weighted sum of the steps' gradients of the generated tensor + weight decay × the bias); the
weight-decay part is known (the server sent the bias), so removing it leaves ``a·g₁ + g₂``, the two
examples' gradients of the generated network. For fc1 that sum is ``[a·δ₁ x₁ᵀ + δ₂ x₂ᵀ, a·δ₁ + δ₂]``:
rank 2, its row space holding both examples' augmented inputs [x, 1]. Per target this script records

* ``data_part_over_float32_spacing``: the median size of that data part in units of the float32
  spacing of the parameters the client sends. Below ~1 it is lost to rounding: the update carries
  nothing readable (the head epoch that starts the round has fitted the two examples and their
  gradients are tiny); the analytic attack then reads noise, and its rows' ``rank_gap`` is near 1;
* the sum's singular values, the rank the attack matches (``row_space_rank``: 1 where one example
  alone is above the resolution) and ``row_space_misfit_of_true_inputs``: how far each true fc1
  input (under the generated network of the round's start and the client's true embedding, which
  the attacker does not have: only the check uses it) lies from the affine space the attack matches;
* fc1's rows whose ratios agree to ``--tolerance`` (relative), compared with the true inputs: where
  unit j is (nearly) inactive for one example, the row divided by its bias entry is the other's input.

Example 0 is the target's (its batch comes first in the round). Example 1's input is exact under the
start network; example 2's under the network after one step, so its error is small but not zero.
A fresh network per target, as the sweeps' round 0.

Usage: python benchmarks/hyperfl_local_isolation.py [--targets 8] [--tolerance 1e-4]
Writes benchmarks/results/hyperfl_local_isolation.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.func import functional_call

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402
from bench.attacks.analytic.batch import _affine_misfit, row_space_rank  # noqa: E402
from bench.components import Choice  # noqa: E402
from bench.defenses.hyperfl.model import EMBEDDING, HEAD_BIAS, HEAD_WEIGHT, HyperNetwork, private_state  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.inversion.isolation import agreeing_groups  # noqa: E402
from bench.inversion.linear import layer_input  # noqa: E402
from bench.runs.attack import RunSpec, _target_batch, prepare  # noqa: E402
from bench.training import start  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "hyperfl_local_isolation.json"
READABLE = 10.0  # a data part this many float32 spacings above rounding is read; below, rounding dominates


def measure(target: int, p, state, tolerance: float) -> dict:
    d = p.defense
    client, _, batch = _target_batch(p, target)
    truth = private_state(state.clients[client])
    round_data = d.round_data(batch)
    update = d._send(state.server, truth, batch)
    proto = d.protocol

    def summed_gradient(name: str) -> torch.Tensor:  # a·g₁ + g₂ of generated tensor ``name``
        _, bias = HyperNetwork.head_keys(name)
        b0 = state.server[bias].double()
        m, lr, wd = proto.momentum, proto.lr, proto.weight_decay
        return -update[bias].double() / lr - wd * b0 * (2 + m - lr * wd)

    gw, gb = summed_gradient("fc1.weight"), summed_gradient("fc1.bias")
    gw = gw.reshape(gb.numel(), -1)
    keep = gb.abs() > 0
    ratios = gw[keep] / gb[keep, None]
    groups = agreeing_groups(ratios, tolerance)
    hyper = d.model.hypernetwork
    generated = functional_call(hyper, {k: state.server[k] for k, _ in hyper.named_parameters()}, (truth[EMBEDDING],))
    params = {**generated, **d.model.head_params(truth[HEAD_WEIGHT], truth[HEAD_BIAS])}
    with torch.no_grad():
        true = layer_input(d.model.target, "fc1", params, round_data.x).double().reshape(len(round_data), -1)
    # the update's resolution: the client sends float32 parameters, so a data part below their spacing is lost
    _, bias = HyperNetwork.head_keys("fc1.weight")
    sent = (state.server[bias] + update[bias]).float()
    spacing = (torch.nextafter(sent, torch.full_like(sent, float("inf"))) - sent).double()
    data_over_spacing = float((proto.lr * gw.flatten()).abs().median() / spacing.median())
    # the row space: the analytic attack recovers each example's fc1 input against it (attacks/analytic/batch.py)
    augmented = torch.cat([gw, gb[:, None]], 1)
    _, singular, vh = torch.linalg.svd(augmented / augmented.abs().max(), full_matrices=False)
    b = len(round_data)
    spectrum = [float(v) for v in singular[: b + 1] / singular[0]]
    rank = row_space_rank(spectrum, b)  # as the attack decides it
    misfit = [float(_affine_misfit(t[None], vh[:rank].T)) for t in true]
    found = []
    for members in groups:
        features = ratios[members].mean(0)
        errors = [float((features - t).norm() / t.norm()) for t in true]
        best = min(range(len(errors)), key=errors.__getitem__)
        found.append({"rows": len(members), "example": best, "relative_error": errors[best]})
    return {
        "target": target,
        "round_examples": len(round_data),
        "fc1_rows": int(gb.numel()),
        "data_part_over_float32_spacing": data_over_spacing,
        "singular_values_relative": spectrum,
        "row_space_rank": rank,
        "row_space_misfit_of_true_inputs": misfit,
        "rows_in_groups": sum(len(g) for g in groups),
        "groups": found,
        "examples_found": sorted({g["example"] for g in found if g["relative_error"] < 1e-2}),  # 0: the target's
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = RunSpec(
        defense=Choice("hyperfl", {"attack_setting": "local"}),
        attack=Choice("analytic", {"iterations": 1}),
        output_dir=Path("/tmp/bench-hyperfl-local-isolation"),
        model=Choice("cnn"),
        num_targets=args.targets,
        federation=FLSettings(clients=10, train_per_client=200, test_per_client=50, batch_size=50, local_epochs=1),
        device="cpu",
    )
    p = prepare(spec)
    per_target = [  # a fresh network per target, as the sweeps' round 0
        measure(t, p, start(p.defense, p.federation, spec.seed, "target", t, "model"), args.tolerance)
        for t in range(args.targets)
    ]
    errors = [g["relative_error"] for r in per_target for g in r["groups"]]
    readable = [r for r in per_target if r["data_part_over_float32_spacing"] > READABLE]
    fits = [min(r["row_space_misfit_of_true_inputs"]) for r in readable]  # the readable example's
    record = {
        "what": "HyperFL local setting (2 one-example steps), round 0, the CNN on photos: fc1 rows whose "
        "ratio (weight-decay drift removed) agrees with other rows, against the true fc1 inputs",
        "targets": args.targets,
        "tolerance": args.tolerance,
        "targets_whose_own_example_is_exposed": sum(0 in r["examples_found"] for r in per_target),
        "targets_with_an_exposed_example": sum(bool(r["examples_found"]) for r in per_target),
        "median_relative_error_of_groups": statistics.median(errors) if errors else None,
        "targets_readable": len(readable),
        "targets_whose_own_input_is_in_the_row_space": sum(
            r["row_space_misfit_of_true_inputs"][0] < 1e-6 for r in per_target
        ),
        "median_best_row_space_misfit_readable": statistics.median(fits) if fits else None,
        "targets_readable_with_one_example": sum(r["row_space_rank"] == 1 for r in readable),
        "per_target": per_target,
    }
    record = provenance.write_record(OUT, record)
    print(json.dumps({k: record[k] for k in list(record)[2:11]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
