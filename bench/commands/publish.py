"""``bench publish``: a sweep's rows (and the images its report shows) as one self-standing results folder.

A sweep directory holds every cell's files, trained states and scratch; what a reader needs to re-rank,
re-plot and re-report without running an attack is its rows and the few reconstruction images a report
shows. ``publish`` writes ``DEST/results.jsonl.gz`` (every usable row, image paths relative to DEST;
gzip-compressed, since it is meant to be committed) and
``DEST/images/`` (the first ``--max-images`` targets per defense × knowledge × attack of each scenario,
by seed and target, as the report's grids take them); other rows keep no image (``image_file: null``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.commands.leaderboard import add_result_args, load
from bench.errors import BenchError
from bench.results import PUBLISHED_FILE, RESULTS_FILE, atomic_write_bytes, gzipped_lines, writable_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="copy a sweep's rows and report images into one folder to commit",
        description="Write DEST/results.jsonl.gz (every usable row of RESULTS, image paths relative to "
        "DEST) and DEST/images/ (the images a report of those rows shows), so that "
        "`bench leaderboard DEST` and `bench report DEST` need nothing else.",
    )
    add_result_args(p)
    p.add_argument("--to", type=Path, required=True, metavar="DEST", help="the folder to write")
    p.add_argument(
        "--max-images",
        type=int,
        default=4,
        metavar="N",
        help="images kept per defense × knowledge × attack and scenario (default: 4, the report's)",
    )
    p.set_defaults(handler=handle)


def _image_key(row: dict) -> tuple:
    config = row["config"]
    return (
        json.dumps(config["run"].get("federation"), sort_keys=True),
        json.dumps(config["dataset"], sort_keys=True),
        config["run"].get("batch_size"),
        config["run"].get("attack_round"),
        json.dumps(config["defense"], sort_keys=True),
        row.get("knowledge"),
        json.dumps(config["model"]),
        config["attack"].get("name"),
    )


def handle(args: argparse.Namespace) -> int:
    if args.max_images < 0:
        raise BenchError(f"--max-images must be >= 0, got {args.max_images}")
    results = load(args)
    dest = writable_dir(args.to)
    images = dest / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    kept: dict[tuple, int] = {}
    out, copied = [], 0
    rows = sorted(results.rows, key=lambda r: (r.get("kind") != "attack", r.get("seed") or 0, r.get("target") or 0))
    for row in rows:
        source = row.pop("_image_path", None)
        row.pop("_source", None)
        if row.get("kind") == "attack":
            key = _image_key(row)
            if source and Path(source).is_file() and kept.get(key, 0) < args.max_images:
                kept[key] = kept.get(key, 0) + 1
                name = f"{row['run_id']}-t{row['target']}.png"
                shutil.copyfile(source, images / name)
                row["image_file"] = f"images/{name}"
                copied += 1
            else:
                row["image_file"] = None
        out.append(row)
    atomic_write_bytes(dest / PUBLISHED_FILE, gzipped_lines(out))
    (dest / RESULTS_FILE).unlink(missing_ok=True)  # an older, uncompressed publication of the same set
    print(f"published {len(out)} rows and {copied} images to {dest}")
    return 0
