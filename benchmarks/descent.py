"""What the analytic attack's descent adds on FedAvg's CNN: the switch search, the mean of two recoveries.

The analytic attack (attacks/analytic) matches conv3's exact, peeled input with a first image recovery.
Its descent (attacks/analytic/descent.py) then solves conv2's input through conv2's max-pool with
the switches searched by the block's residual (bench/inversion/switches.py), recovers a second image
that matches it, and answers with the mean of the two. For the FedSGD gradient of one photo (FedAvg,
the HyperFL paper's CNN, round 0, the main command's setting) this script records, per target:

- conv2's input, relative error: the first image's, the least-squares solution with the first image's
  argmax switches refreshed from each solution (R-GAP's recursion, ``solve_block``), and the switch search's;
- the PSNR of the first image, the second, their mean (the attack's answer), the image the matching
  loss picks of the two (``descend=compete``), and a control: the mean of the first image and a second
  recovery of the *same* input (conv3's) from another random start. The control separates what the
  searched conv2 input adds from what averaging any two recoveries adds.

Usage: python benchmarks/descent.py [--targets 16] [--seeds 0 1]
Writes benchmarks/results/descent.json.
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
from bench.attacks.analytic.descent import lower_plan  # noqa: E402
from bench.components import Choice  # noqa: E402
from bench.inversion.linear import as_gradient  # noqa: E402
from bench.inversion.recursive import BlockEvidence, chain_states, solve_block  # noqa: E402
from bench.metrics import psnr_per_image  # noqa: E402
from bench.progress import SilentProgress  # noqa: E402
from bench.runs.attack import RunSpec, observe_target, prepare  # noqa: E402
from bench.seeding import generator  # noqa: E402
from bench.training import start  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "descent.json"


def measure(seed: int, targets: int) -> list[dict]:
    spec = RunSpec(
        defense=Choice("fedavg"),
        attack=Choice("analytic"),
        output_dir=Path("/tmp/bench-descent"),
        model=Choice("cnn"),
        num_targets=targets,
        seed=seed,
        device="cpu",
    )
    p = prepare(spec)
    attack = p.attack
    cases = [observe_target(p, start(p.defense, p.federation, seed, "target", t, "model"), t) for t in range(targets)]
    plans = [attack._plan(case.obs) for case in cases]
    gens = [generator(seed, "target", t, "attack") for t in range(targets)]  # as the attack draws them
    first = attack._recover(plans, gens, SilentProgress())
    lowers = [lower_plan(plan, rec.images[0], True) for plan, rec in zip(plans, first)]
    assert all(not isinstance(low, str) for low in lowers), lowers
    second = attack._recover([low[0] for low in lowers], gens, SilentProgress())  # type: ignore[index]
    others = [generator(seed, "target", t, "control") for t in range(targets)]
    control = attack._recover(plans, others, SilentProgress())
    rows = []
    for t, (case, plan, low) in enumerate(zip(cases, plans, lowers)):
        truth = case.batch.x[0]

        def psnr(image: torch.Tensor, truth: torch.Tensor = truth) -> float:
            pixels = p.data.denormalise(torch.stack([image.float(), truth]).cpu()).clamp(0, 1)
            return float(psnr_per_image(pixels[:1], pixels[1:])[0])

        blocks = plan.convs
        assert isinstance(blocks, list) and isinstance(low, tuple)
        true_input = chain_states(blocks, plan.state, truth)[1]  # conv2's input
        estimate = chain_states(blocks, plan.state, first[t].images[0])[1]
        evidence = BlockEvidence.of(
            blocks[1],
            plan.state,
            as_gradient(case.obs, blocks[1].weight_key),
            plan.target.features.double().reshape(32, 6, 6),
            plan.target.upstream.double().reshape(32, 6, 6),
        )
        argmax = solve_block(evidence, estimate, switch_rounds=6).inputs
        searched = low[0].target.features.double().reshape(true_input.shape)

        def error(v: torch.Tensor, truth: torch.Tensor = true_input) -> float:
            return float((v.double() - truth).norm() / truth.norm())

        one, two = first[t].images[0], second[t].images[0]
        picks_second = attack._score(plan, two) < attack._score(plan, one)
        rows.append(
            {
                "seed": seed,
                "target": t,
                "conv2_input_error": {
                    "first_image": error(estimate),
                    "argmax": error(argmax),
                    "search": error(searched),
                },
                "switches_moved": low[1]["switches_moved"],
                "psnr": {
                    "first": psnr(one),
                    "second": psnr(two),
                    "mean": psnr((one + two) / 2),
                    "matching_loss_pick": psnr(two if picks_second else one),
                    "control_mean": psnr((one + control[t].images[0]) / 2),
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [row for seed in args.seeds for row in measure(seed, args.targets)]
    kinds = list(rows[0]["psnr"])
    errors = list(rows[0]["conv2_input_error"])
    record = {
        "what": "FedAvg, FedSGD gradient of one photo, the HyperFL paper's CNN at round 0: conv2's input recovered "
        "by the analytic attack's switch search against the first image's and R-GAP's argmax switches, and the "
        "PSNR of the first recovery, the descent's second, their mean (the attack's answer), the matching loss's "
        "pick of the two, and the mean of the first and a recovery of the same input from another start (control)",
        "targets": args.targets,
        "seeds": args.seeds,
        "median_conv2_input_error": {k: statistics.median(r["conv2_input_error"][k] for r in rows) for k in errors},
        "mean_psnr": {k: statistics.mean(r["psnr"][k] for r in rows) for k in kinds},
        "median_psnr": {k: statistics.median(r["psnr"][k] for r in rows) for k in kinds},
        "mean_gain_over_first": {k: statistics.mean(r["psnr"][k] - r["psnr"]["first"] for r in rows) for k in kinds},
        "mean_above_first": {k: sum(r["psnr"][k] > r["psnr"]["first"] for r in rows) / len(rows) for k in kinds},
        "per_target": rows,
    }
    record = provenance.write_record(OUT, record)
    print(json.dumps({k: record[k] for k in ("median_conv2_input_error", "mean_psnr", "mean_gain_over_first")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
