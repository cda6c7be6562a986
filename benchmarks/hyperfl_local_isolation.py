"""Does HyperFL's own protocol (the ``local`` setting) still give away exact fc1 inputs? A measurement.

Not a test, and not yet an attack: the evidence for the one docs/hyperfl.md says is in reach. In the
``local`` setting the server sees the hypernetwork's update after the client's round over two
mini-batches of one example each. For every generated tensor k the generator head's bias update is
−lr × (momentum-weighted sum of the steps' gradients of the generated tensor + weight decay × the
bias); the weight-decay part is known (the server sent the bias), so removing it leaves
``a·g₁ + g₂``, the two examples' gradients of the generated network. For fc1, row j of that sum is
``a·δ₁ⱼ x₁ + δ₂ⱼ x₂``: where unit j is inactive (ReLU) for one of the two examples, the row divided
by its bias entry is the other example's fc1 input, exactly. Such rows agree with each other.

Example 0 is the target's (its batch comes first in the round). For each target this script groups
fc1's rows whose ratios agree to ``--tolerance`` (relative) and compares every group of two or more
rows with the true fc1 inputs of the round's examples under the generated network of the round's
start (the client's true embedding, which the attacker does not have: the comparison uses it, the
grouping does not). Example 1's input is exact under that network; example 2's under the network
after one step, so its error against the start network is small but not zero.

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
from bench.components import Choice  # noqa: E402
from bench.defenses.hyperfl.model import EMBEDDING, HEAD_BIAS, HEAD_WEIGHT, HyperNetwork, private_state  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.inversion.isolation import agreeing_groups  # noqa: E402
from bench.inversion.linear import layer_input  # noqa: E402
from bench.runs.attack import RunSpec, _target_batch, prepare  # noqa: E402
from bench.training import start  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "hyperfl_local_isolation.json"


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
    state = start(p.defense, p.federation, spec.seed, "target", 0, "model")
    per_target = [measure(t, p, state, args.tolerance) for t in range(args.targets)]
    errors = [g["relative_error"] for r in per_target for g in r["groups"]]
    record = {
        "what": "HyperFL local setting (2 one-example steps), round 0, the CNN on photos: fc1 rows whose "
        "ratio (weight-decay drift removed) agrees with other rows, against the true fc1 inputs",
        "targets": args.targets,
        "tolerance": args.tolerance,
        "targets_whose_own_example_is_exposed": sum(0 in r["examples_found"] for r in per_target),
        "targets_with_an_exposed_example": sum(bool(r["examples_found"]) for r in per_target),
        "median_relative_error_of_groups": statistics.median(errors) if errors else None,
        "per_target": per_target,
    }
    record = provenance.write_record(OUT, record)
    print(json.dumps({k: record[k] for k in list(record)[2:7]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
