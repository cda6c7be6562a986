"""``bench run``: attack one defense with one attack on a few target batches."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from bench.commands.common import (
    add_round_args,
    attacked_round,
    given,
    add_component_args,
    add_data_args,
    add_federation_args,
    add_run_args,
    choice,
    default_output_dir,
    federation,
)
from bench.errors import BenchError
from bench.protocols import equal_optimiser
from bench.runs.attack import RunSpec, run
from bench.progress import SilentProgress, TqdmProgress
from bench.results import RESULTS_FILE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="attack a defense: reconstruct target batches and score them",
        description="Attack a defense with an attack on --num-targets target batches and "
        "append one result row per target to OUTPUT_DIR/results.jsonl.",
    )
    add_component_args(p, "defense", None, required=True)
    add_component_args(p, "attack", None, required=True)
    add_data_args(p)
    add_round_args(p)
    p.add_argument("--num-targets", type=int, default=1, help="number of target batches (default: 1)")
    p.add_argument(
        "--attack-round",
        type=int,
        default=0,
        metavar="R",
        help="train R federated rounds first and attack the model of round R "
        "(default: 0, a fresh untrained network per target)",
    )
    p.add_argument(
        "--lpips-weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="torchvision's ImageNet AlexNet weights (alexnet-owt-7be5be79.pth) for LPIPS; without it "
        "bench looks in torch hub's cache and, unless --offline, downloads them there once",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="never download anything (LPIPS weights): rows without local weights get lpips null; "
        "the same as BENCH_OFFLINE=1",
    )
    p.add_argument(
        "--knowledge",
        default=None,
        metavar="LEVEL",
        help="what the attacker knows: a knowledge level the defense declares (`bench list defense`; "
        "unaware, adaptive, oracle); default: the defense's default (adaptive)",
    )
    p.add_argument(
        "--tuning",
        type=Path,
        default=None,
        metavar="FILE",
        help="use the attack settings `bench tune` chose for this defense, knowledge level, attack, data "
        "set and model (explicit --attack-arg values are overridden by the tuned ones; the row says so)",
    )
    p.add_argument("--resume", action="store_true", help="skip targets this run already recorded in OUTPUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_args(p)
    add_federation_args(p, "--train-batch-size")
    p.set_defaults(handler=handle)


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A per-target table, then per metric the distribution over targets (median, mean ± std, 95 % interval),
    the success rate and the no-information baseline: what the leaderboard would say of these targets."""
    from bench.metrics import REGISTRY
    from bench.reports import DEFAULT_SUCCESS
    from bench.reports.stats import Rate, SuccessRule, Summary

    head = (
        f"{'target':>6} {'client':>6} {'PSNR':>7} {'base':>6} {'SSIM':>6} {'LPIPS':>6} {'label':>5} {'iters':>6} "
        f"{'sec':>7}  status"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['target']:>6} {r['target_client']:>6} {_fmt(r['psnr'], 2):>7} "
            f"{_fmt(r.get('baseline_psnr'), 2):>6} {_fmt(r['ssim'], 3):>6} {_fmt(r['lpips'], 3):>6} "
            f"{_fmt(r['label_acc'], 2):>5} {r['attack_iterations']:>6} {r['attack_seconds']:>7.1f}  {r['status']}"
        )
    ok = [r for r in rows if r["status"] == "ok"]
    lines.append(
        f"over {len(ok)} target(s)"
        + (f" ({len(rows) - len(ok)} diverged, left out)" if len(ok) < len(rows) else "")
        + ": median, mean ± std [95 % bootstrap interval of the mean]"
    )
    for metric in REGISTRY.values():
        summary = Summary.of(r.get(metric.name) for r in ok)
        if summary.n:
            lines.append(
                f"  {metric.title:<9} {summary.median_text(metric.digits)}, {summary.text(metric.digits)} "
                f"{summary.interval_text(metric.digits)}"
            )
    rule = SuccessRule.parse(DEFAULT_SUCCESS)
    verdicts = [v for v in (rule.passes(r) for r in ok) if v is not None]
    baseline = Summary.of(r.get("baseline_psnr") for r in ok)
    if verdicts:
        lines.append(
            f"  recovered ({rule.describe()}): {Rate(sum(verdicts), len(verdicts)).text()}; no-information "
            f"baseline PSNR median {baseline.median_text(2)}"
        )
    notes = {r["lpips_note"] for r in rows if r.get("lpips_note") and r.get("lpips") is None}
    notes |= {n for r in rows for n in r.get("notes", [])}
    lines += [f"note: {n}" for n in sorted(notes)]
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    output_dir = args.output_dir or default_output_dir(args.defense, args.attack)
    defense, optimiser = equal_optimiser(given(args, "defense"), args.optimiser)
    spec = RunSpec(
        defense=defense,
        attack=given(args, "attack"),
        output_dir=output_dir,
        dataset=given(args, "dataset"),
        model=choice(args, "model"),
        round=attacked_round(args),
        optimiser=optimiser,
        num_targets=args.num_targets,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
        lpips_weights=args.lpips_weights,
        federation=federation(args),
        attack_round=args.attack_round,
        resume=args.resume,
        knowledge=args.knowledge,
        offline=args.offline,
    )
    if args.tuning is not None:
        from dataclasses import replace

        from bench.runs.attack import resolved_config
        from bench.tuning import TuningFile, tuned

        tuned_spec = tuned(spec, TuningFile.read(args.tuning), resolved_config)
        if tuned_spec.tuning is None:
            raise BenchError(
                f"tuning file {str(args.tuning)!r} has no entry for {spec.defense.name} "
                f"[{resolved_config(spec)['run']['knowledge']}] × {spec.attack.name} on this data set "
                f"and model; run `bench tune` for it first"
            )
        spec = replace(tuned_spec)
        print(f"tuned settings {dict(spec.tuning['options'])} (tuning {spec.tuning['id']})", flush=True)
    progress = SilentProgress() if args.quiet else TqdmProgress()
    rows = run(spec, progress=progress, log=lambda m: print(m, flush=True))
    print(summary_table(rows))
    print(f"results: {Path(output_dir) / RESULTS_FILE}  grid: {Path(output_dir) / 'reconstructions.png'}")
    return 0
