"""Why R-GAP's recursion does not reach through the HyperFL paper's CNN: its max-pool switches. A measurement.

R-GAP (Zhu & Blaschko, ICLR 2021) solves each convolution's input from its forward pass and weight
gradient; after a 2×2 max-pool only the window's maximum is seen, and *which* entry it was (the
switch) must come from an estimate. For FedAvg's FedSGD gradient of one photo (the CNN, round 0, the
main command's targets) this script runs the analytic attack (gradient matching, the default), takes
the switches its image gives at every block, counts how many differ from the true image's, and runs
the recursion with them (``recursion=switches``), and with the true switches for comparison. It also
records how exactly the attack's switch-free peeling (:mod:`bench.inversion.peel`) recovers the input
of the top block (conv3), and what the recursion gives from there down, with the estimate's switches
of the two lower blocks.

Usage: python benchmarks/rgap_switches.py [--targets 16] [--seed 0]
Writes benchmarks/results/rgap_switches.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402
from bench.components import Choice  # noqa: E402
from bench.inversion.linear import as_gradient  # noqa: E402
from bench.inversion.recursive import chain_states, conv_chain, invert_chain, pool_switches  # noqa: E402
from bench.metrics import psnr_per_image  # noqa: E402
from bench.progress import SilentProgress  # noqa: E402
from bench.runs.attack import RunSpec, observe_target, prepare  # noqa: E402
from bench.seeding import generator  # noqa: E402
from bench.training import start  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "rgap_switches.json"


def switches(blocks, params, image: torch.Tensor) -> list[torch.Tensor]:
    """Each block's max-pool switches when the chain runs on ``image``."""
    inputs = chain_states(blocks, params, image)[:-1]
    return [
        pool_switches(b, params[b.weight_key].double(), params[b.bias_key].double(), x) for b, x in zip(blocks, inputs)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = RunSpec(
        defense=Choice("fedavg"),
        attack=Choice("analytic"),
        output_dir=Path("/tmp/bench-rgap-switches"),
        model=Choice("cnn"),
        num_targets=args.targets,
        seed=args.seed,
        device="cpu",
    )
    p = prepare(spec)
    rows = []
    for t in range(args.targets):
        state = start(p.defense, p.federation, spec.seed, "target", t, "model")
        case = observe_target(p, state, t)
        plan = p.attack._plan(case.obs)
        blocks = conv_chain(case.obs.public.model, plan.reading.layer.name)
        assert isinstance(blocks, list)
        gradients = {b.weight_key: as_gradient(case.obs, b.weight_key) for b in blocks}
        estimate = p.attack.reconstruct(case.obs, generator(spec.seed, "target", t, "attack"), SilentProgress()).images[
            0
        ]
        truth = case.batch.x[0]
        wrong = [
            float((a != b).float().mean())
            for a, b in zip(switches(blocks, plan.state, estimate), switches(blocks, plan.state, truth))
        ]

        def psnr(image: torch.Tensor, truth: torch.Tensor = truth) -> float:
            pixels = p.data.denormalise(torch.stack([image.float(), truth]).cpu()).clamp(0, 1)
            return float(psnr_per_image(pixels[:1], pixels[1:])[0])

        from_estimate, _ = invert_chain(blocks, plan.state, gradients, plan.reading.features, plan.upstream, estimate)
        from_truth, _ = invert_chain(blocks, plan.state, gradients, plan.reading.features, plan.upstream, truth)
        peeled, peel = plan.target, plan.peel  # the input the attack matched: conv3's, peeled switch-free
        below = blocks[: [b.name for b in blocks].index(peeled.layer)]
        true_input = chain_states(blocks, plan.state, truth)[len(below)]
        peel_error = float((peeled.features.double() - true_input.flatten()).norm() / true_input.norm())
        from_peeled, _ = invert_chain(below, plan.state, gradients, peeled.features, peeled.upstream, estimate)
        rows.append(
            {
                "target": t,
                "estimate_psnr": psnr(estimate),
                "wrong_switches": dict(zip([b.name for b in blocks], wrong)),
                "recursion_from_estimate_psnr": psnr(from_estimate),
                "recursion_from_true_switches_psnr": psnr(from_truth),
                "peeled": peel["blocks"],
                "peeled_input_relative_error": peel_error,
                "recursion_from_peeled_input_psnr": psnr(from_peeled),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    names = list(rows[0]["wrong_switches"])
    record = {
        "what": "FedAvg, FedSGD gradient of one photo, the HyperFL paper's CNN at round 0: the fraction of "
        "max-pool switches the analytic attack's image gets wrong per block, and what R-GAP's recursion gives "
        "with its switches and with the true ones; how exactly the switch-free peeling recovers conv3's input, and "
        "what the recursion gives from there with the estimate's switches below",
        "targets": args.targets,
        "seed": args.seed,
        "median_estimate_psnr": statistics.median(r["estimate_psnr"] for r in rows),
        "median_wrong_switches": {n: statistics.median(r["wrong_switches"][n] for r in rows) for n in names},
        "median_recursion_from_estimate_psnr": statistics.median(r["recursion_from_estimate_psnr"] for r in rows),
        "median_recursion_from_true_switches_psnr": statistics.median(
            r["recursion_from_true_switches_psnr"] for r in rows
        ),
        "median_peeled_input_relative_error": statistics.median(r["peeled_input_relative_error"] for r in rows),
        "median_recursion_from_peeled_input_psnr": statistics.median(
            r["recursion_from_peeled_input_psnr"] for r in rows
        ),
        "per_target": rows,
    }
    record = provenance.write_record(OUT, record)
    print(json.dumps({k: record[k] for k in list(record)[2:8]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
