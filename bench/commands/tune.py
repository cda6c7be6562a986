"""``bench tune``: pick an attack's settings per defense on tuning seeds, never on the reported ones."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from bench.commands.common import (
    add_component_args,
    add_data_args,
    add_federation_args,
    add_round_args,
    attacked_round,
    choice,
    federation,
    given,
)
from bench.errors import BenchError
from bench.protocols import equal_optimiser
from bench.tuning import DEFAULT_TUNING_SEEDS, TUNING_SEED_BASE, TuningFile, check_tuning_seeds, parse_grid

DEFAULT_FILE = Path("results") / "tuning.json"
DEFAULT_WORK = Path("results") / "tuning"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="tune an attack's settings against a defense on tuning seeds",
        description="Run every point of an attack's settings grid against a defense (one knowledge "
        f"level) on tuning seeds (>= {TUNING_SEED_BASE}, never reported), pick the point "
        "with the highest median PSNR, and write it to a tuning file that `run --tuning`, "
        "sweeps ([sweep] tuning) and the leaderboard use. With --sweep FILE: every "
        "defense × knowledge × attack of the sweep whose [[attacks]] entry has a `tune` "
        "grid, with the file's [tune] settings. Cells resume like a sweep's.",
    )
    p.add_argument(
        "--sweep",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="tune every cell of this sweep file that has a grid (instead of --defense/--attack)",
    )
    add_component_args(p, "defense", None)
    add_component_args(p, "attack", None)
    add_data_args(p)
    p.add_argument(
        "--knowledge", default=None, metavar="LEVEL", help="attacker knowledge level (default: the defense's)"
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="an attack option and the values to try (repeatable: the grid is their product)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_TUNING_SEEDS),
        metavar="SEED",
        help=f"tuning seeds, each >= {TUNING_SEED_BASE} (default: {' '.join(map(str, DEFAULT_TUNING_SEEDS))})",
    )
    p.add_argument("--num-targets", type=int, default=8, help="targets per tuning seed (default: 8)")
    add_round_args(p)
    p.add_argument("--attack-round", type=int, default=0, metavar="R", help="training rounds before the attack")
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"tuning file to add the winners to (default: {DEFAULT_FILE}; with --sweep, its [sweep] tuning)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where the tuning runs go (default: {DEFAULT_WORK}; with --sweep, its [tune] output_dir)",
    )
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="cells at once (default: 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_federation_args(p, "--train-batch-size")
    p.set_defaults(handler=handle)


def _single_job(args: argparse.Namespace):
    from bench.runs.attack import RunSpec
    from bench.sweeps.tune import TuneJob

    if args.defense is None or args.attack is None:
        raise BenchError("tune needs --defense and --attack (or --sweep CONFIG)")
    defense, optimiser = equal_optimiser(given(args, "defense"), args.optimiser)
    spec = RunSpec(
        defense=defense,
        attack=given(args, "attack"),
        output_dir=Path("."),
        dataset=given(args, "dataset"),
        model=choice(args, "model"),
        round=attacked_round(args),
        optimiser=optimiser,
        num_targets=args.num_targets,
        seed=TUNING_SEED_BASE,
        device=args.device,
        data_root=args.data_root,
        federation=federation(args),
        attack_round=args.attack_round,
        knowledge=args.knowledge,
    )
    return (
        [TuneJob(spec, parse_grid(args.grid))],
        tuple(args.seeds),
        args.output or DEFAULT_FILE,
        args.work_dir or DEFAULT_WORK,
    )


def _sweep_jobs(args: argparse.Namespace):
    from bench.sweeps.config import load_config
    from bench.sweeps.plan import plan
    from bench.sweeps.tune import jobs_of_sweep

    if args.defense or args.attack or args.grid:
        raise BenchError("--sweep takes the defenses, attacks and grids from the file: drop --defense/--attack/--grid")
    cfg = load_config(args.sweep)
    if cfg.tune is None:
        raise BenchError(f"{cfg.source}: no [tune] section (and no `tune` grid in [[attacks]]): nothing to tune")
    output = args.output or cfg.tuning
    if output is None:
        raise BenchError(f"{cfg.source}: say where the winners go: [sweep] tuning = FILE, or --output FILE")
    cells, _ = plan(replace(cfg, train=None), use_tuning=False)
    jobs = jobs_of_sweep(cells, cfg.tune.grids, cfg.attacks, cfg.tune.num_targets, cfg.tune.attack_round)
    if not jobs:
        raise BenchError(f"{cfg.source}: no [[attacks]] entry has a `tune` grid: nothing to tune")
    return jobs, cfg.tune.seeds, output, args.work_dir or cfg.tune.output_dir


def handle(args: argparse.Namespace) -> int:
    from bench.sweeps.runner import check_writable, run_cells
    from bench.sweeps.tune import tuning_cells, winners

    if args.jobs < 1:
        raise BenchError(f"--jobs must be >= 1, got {args.jobs}")
    if args.num_targets < 1:
        raise BenchError(f"--num-targets must be >= 1, got {args.num_targets}")
    jobs, seeds, output, work = _sweep_jobs(args) if args.sweep else _single_job(args)
    seeds = check_tuning_seeds(seeds)
    cells = tuning_cells(jobs, seeds)
    check_writable(work)
    print(
        f"tune: {len(jobs)} defense × attack job(s), {len(cells)} cell(s) on tuning seeds "
        f"{', '.join(map(str, seeds))}; runs in {work}",
        flush=True,
    )
    outcomes = run_cells(cells, work, args.jobs, "local", None, args.quiet)
    failed = [o for o in outcomes if o.status == "failed"]
    tuning = TuningFile.read(output, must_exist=False)
    found = winners(jobs, seeds, work)
    for entry in found:
        tuning.put(entry)
        best = max(entry.scores, key=lambda s: (s["median_psnr"] or -1e9, s["mean_psnr"] or -1e9))
        print(
            f"  {entry.key['defense']['name']} [{entry.key['knowledge']}] × {entry.key['attack']}: "
            f"{entry.options} (median PSNR {best['median_psnr']:.2f} dB over {best['n']} tuning targets; id "
            f"{entry.id})"
        )
    if found:
        tuning.write()
        print(f"tuning file: {output} ({len(tuning.entries)} entries)")
    if failed:
        raise BenchError(
            f"{len(failed)} tuning cell(s) failed (first: {failed[0].label}: {failed[0].error}); "
            f"re-run the same command to retry them"
        )
    return 0
