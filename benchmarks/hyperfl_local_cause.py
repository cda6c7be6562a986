"""Why HyperFL's own round hides targets from the analytic attack: float32 rounding, or the generated network's
scale? A measurement (docs/hyperfl.md).

In HyperFL's round (a head epoch, then a local epoch over the round's examples) the analytic attack reads the
fc1 part of the update's data part: with the known weight-decay drift removed, the generator heads' bias update
is a β-weighted sum of the round's gradients of the generated network (bench.defenses.hyperfl.attacker), and for
fc1 that sum ``[Σ β_s δ_s x_sᵀ, Σ β_s δ_s]`` has one direction per example whose gradient is readable. Per
target (seed 0, photos, the paper's CNN, 10 clients, a fresh network per target as the sweeps' round 0) and per
generator initialisation (``default``: PyTorch's, as the official code; ``fan_in``) this records

* ``max_abs_logit_at_start``: the generated network's largest logit on the round's examples (with the client's
  head), against the same CNN under its own default initialisation (``cnn_max_abs_logit``);
* ``one_minus_p_true_after_head_epoch``: each example's 1 − p(true label) after the head epoch, in float64 — an
  example the head epoch has fitted (0) contributes a vanishing gradient to the rest of the round;
* the relative singular values of fc1's data part and the number above 1e-3 (``readable_rank``), with the client
  computing in float32 (what it sends) and in float64 (the same round without float32 rounding).

If float32 rounding decided what is readable, the float64 client would read more examples; if the overconfident
start decides it, the float64 client reads the same and ``fan_in`` reads more.

Usage: python benchmarks/hyperfl_local_cause.py [--targets 8] [--examples 2 8]
Writes benchmarks/results/hyperfl_local_cause.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402
from bench.components import Choice  # noqa: E402
from bench.defenses.hyperfl.model import (  # noqa: E402
    EMBEDDING,
    HEAD_BIAS,
    HEAD_WEIGHT,
    HYPER,
    HyperNetwork,
    prefixed,
    private_state,
)
from bench.defenses.hyperfl.recovery import recover_from_gradient, weight_decay_factor  # noqa: E402
from bench.defenses.hyperfl.round import local_round  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.functional import forward  # noqa: E402
from bench.round import Round  # noqa: E402
from bench.runs.attack import RunSpec, _target_batch, prepare  # noqa: E402
from bench.threat import LocalData  # noqa: E402
from bench.training import start  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "hyperfl_local_cause.json"
READABLE = 1e-3  # a singular direction this far above the largest counts as a readable example


def fc1_spectrum(d, server, update, steps: int) -> tuple[list[float], float]:
    """Relative singular values of fc1's part of the update's data part (the weight-decay drift removed), and
    the largest one in absolute terms."""
    p = d.round_protocol()
    drift = weight_decay_factor(p.lr, p.momentum, p.weight_decay, steps) - 1
    data = {k: update[k].double() - drift * server[k].double() for k in update}
    recovered = recover_from_gradient({k: v.double() for k, v in server.items()}, data, d.model.hypernetwork.shapes)
    w, b = recovered.gradients["fc1.weight"].double(), recovered.gradients["fc1.bias"].double()
    singular = torch.linalg.svdvals(torch.cat([w.reshape(b.numel(), -1), b[:, None]], 1))
    return [float(v) for v in singular[:8] / singular[0].clamp_min(1e-300)], float(singular[0])


def measure(p, state, target: int) -> dict:
    d = p.defense
    client, _, batch = _target_batch(p, target)
    truth = {k: v.detach().clone() for k, v in private_state(state.clients[client]).items()}
    server = state.server
    proto = d.round_protocol()
    d.model.eval()
    with torch.no_grad():
        generated = forward(d.model.hypernetwork, dict(server), truth[EMBEDDING])
        head = d.model.head_params(truth[HEAD_WEIGHT], truth[HEAD_BIAS])
        logits = torch.func.functional_call(d.model.target, {**generated, **head}, (batch.x,))
        own = p.defense.task.new_model().eval()(batch.x)
    batches = list(batch.batches())
    hyper64 = {k: v.double() for k, v in prefixed(server).items()}
    private64 = {k: v.double() for k, v in truth.items()}
    head_batches = [(x.double(), y) for x, y in batches] * proto.head_epochs
    _, after_head = local_round(d.model, hyper64, private64, head_batches, [], proto, False)
    with torch.no_grad():
        g64 = forward(d.model.hypernetwork, {k[len(HYPER) :]: v for k, v in hyper64.items()}, private64[EMBEDDING])
        head64 = d.model.head_params(after_head[HEAD_WEIGHT], after_head[HEAD_BIAS])
        probs = torch.softmax(torch.func.functional_call(d.model.target, {**g64, **head64}, (batch.x.double(),)), -1)
    fitted = (1 - probs[torch.arange(len(batch)), batch.y]).tolist()
    steps = batch.steps_per_epoch() * proto.local_epochs
    with torch.no_grad():
        update32 = d.send(server, truth, batch)
        data64 = LocalData(batch.x.double(), batch.y, batch.batch_size)
        update64 = d.send({k: v.double() for k, v in server.items()}, private64, data64)
    (s32, top32), (s64, top64) = fc1_spectrum(d, server, update32, steps), fc1_spectrum(d, server, update64, steps)
    spectra = {"float32": s32, "float64": s64}
    bias = HyperNetwork.head_keys("fc1.bias")[1]
    drift = weight_decay_factor(proto.lr, proto.momentum, proto.weight_decay, steps) - 1
    sent = (server[bias] + update32[bias]).float()
    spacing = (torch.nextafter(sent, torch.full_like(sent, float("inf"))) - sent).double()
    return {
        "target": target,
        "max_abs_logit_at_start": float(logits.abs().max()),
        "cnn_max_abs_logit": float(own.abs().max()),
        "one_minus_p_true_after_head_epoch": fitted,
        "singular_values_relative": spectra,
        "largest_singular_value": {"float32": top32, "float64": top64},
        "fc1_bias_data_part_over_float32_spacing": float(
            (update64[bias] - drift * server[bias].double()).abs().median() / spacing.median()
        ),
        "readable_rank": {k: sum(v > READABLE for v in s[: len(batch)]) for k, s in spectra.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument(
        "--examples", type=int, nargs="+", default=[2, 8], help="the rounds' local examples (batches of 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict = {
        "what": "HyperFL's local round (a head epoch, then a local epoch) over --examples examples in batches of 1, "
        "round 0, the CNN on photos: the generated network's scale, how far the head epoch fits the examples, and "
        "the readable rank of fc1's data part with a float32 and a float64 client, per generator init",
        "targets": args.targets,
        "readable_threshold": READABLE,
    }
    for init, examples in itertools.product(("default", "fan_in"), args.examples):
        spec = RunSpec(
            defense=Choice("hyperfl", {"generator_init": init}),
            attack=Choice("analytic", {"iterations": 1}),
            output_dir=Path("/tmp/bench-hyperfl-local-cause"),
            model=Choice("cnn"),
            round=Round("local", 1, examples),
            num_targets=args.targets,
            federation=FLSettings(clients=10, train_per_client=200, test_per_client=50, batch_size=50, local_epochs=1),
            device="cpu",
        )
        p = prepare(spec)
        rows = [
            measure(p, start(p.defense, p.federation, spec.seed, "target", t, "model"), t) for t in range(args.targets)
        ]
        fitted = [v for r in rows for v in r["one_minus_p_true_after_head_epoch"]]
        record[f"{init}_{examples}"] = {
            "per_target": rows,
            "median_max_abs_logit_at_start": statistics.median(r["max_abs_logit_at_start"] for r in rows),
            "median_cnn_max_abs_logit": statistics.median(r["cnn_max_abs_logit"] for r in rows),
            "examples_fitted_by_the_head_epoch": sum(v < 1e-6 for v in fitted),
            "examples": len(fitted),
            "readable_examples_float32": sum(r["readable_rank"]["float32"] for r in rows),
            "readable_examples_float64": sum(r["readable_rank"]["float64"] for r in rows),
            "targets_where_float64_reads_more": sum(
                r["readable_rank"]["float64"] > r["readable_rank"]["float32"] for r in rows
            ),
        }
    record["provenance"] = provenance.stamp("cpu")
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    for key, value in record.items():
        if isinstance(value, dict) and "per_target" in value:
            print(key, {k: v for k, v in value.items() if k != "per_target"})
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
