"""Targets in one tensor against one at a time: the throughput that affords 16+ targets per cell.

Not a test: a measurement. The analytic attack reconstructs the same N targets (fedavg, FedSGD, a
fresh network per target, round 0) twice in one process — once with ``target_batch=N`` (every
target's network, image and recovered quantities stacked and ``vmap``-ed) and once with
``target_batch=1`` (N sequential runs) — alternating which goes first over ``--rounds`` rounds, so
machine load hits both alike. Reports the median ratio batched / sequential of the attack's wall
time (observation and scoring excluded), the medians of the seconds, and the PSNRs of both (the
same problems: their scores agree up to the float order of the batched arithmetic).

Usage: python benchmarks/target_batching.py [--targets 16] [--model lenet] [--iterations 2000] [--rounds 3]
Writes benchmarks/results/target_batching.json and prints a Markdown table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402
from bench.runs.attack import RunSpec, observe_target, prepare, reconstruct, score_target  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.training import start  # noqa: E402
from bench.progress import SilentProgress  # noqa: E402
from bench.components import Choice  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "target_batching.json"


def timed(targets: int, model: str, iterations: int, batch: int) -> tuple[float, list[float]]:
    spec = RunSpec(
        defense=Choice("fedavg"),
        attack=Choice("analytic", {"iterations": iterations, "target_batch": batch}),
        output_dir=Path("/tmp/bench-target-batching"),
        model=Choice(model),
        num_targets=targets,
        federation=FLSettings(clients=4),
        device="cpu",
    )
    p = prepare(spec)
    cases = [
        observe_target(p, start(p.defense, p.federation, spec.seed, "target", t, "model"), t) for t in range(targets)
    ]
    began = time.perf_counter()
    recs = []
    for i in range(0, targets, batch):
        chunk, _ = reconstruct(p, cases[i : i + batch], SilentProgress())
        recs += chunk
    seconds = time.perf_counter() - began
    psnrs = [score_target(p, c, r, 0.0, batch)[0]["psnr"] for c, r in zip(cases, recs)]
    return seconds, psnrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batched, sequential, ratios = [], [], []
    for r in range(args.rounds):
        order = (args.targets, 1) if r % 2 == 0 else (1, args.targets)
        results = {b: timed(args.targets, args.model, args.iterations, b) for b in order}
        batched.append(results[args.targets])
        sequential.append(results[1])
        ratios.append(results[args.targets][0] / results[1][0])
        print(
            f"round {r}: batched {results[args.targets][0]:.1f} s, sequential {results[1][0]:.1f} s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    record = {
        "what": f"analytic attack, {args.targets} targets, {args.model}, {args.iterations} iterations, fedavg FedSGD",
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "batched_seconds_median": statistics.median(s for s, _ in batched),
        "sequential_seconds_median": statistics.median(s for s, _ in sequential),
        "psnr_batched": batched[0][1],
        "psnr_sequential": sequential[0][1],
        "threads": args.threads,
        "command": "python " + " ".join(sys.argv),
        **provenance.stamp("cpu"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    mean = statistics.mean
    print(
        f"\n| {args.targets} targets, {args.model}, {args.iterations} its | batched | sequential | ratio |\n"
        f"|---|---|---|---|\n| seconds (median of {args.rounds}) | {record['batched_seconds_median']:.1f} | "
        f"{record['sequential_seconds_median']:.1f} | {record['ratio_median']:.3f} |\n"
        f"| mean PSNR, dB | {mean(record['psnr_batched']):.2f} | {mean(record['psnr_sequential']):.2f} | |"
    )
    print(f"written: {OUT}")


if __name__ == "__main__":
    main()
