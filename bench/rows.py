"""Result rows: their schema, declared once, with a version.

Every row a run writes is built here (:func:`attack_row`, :func:`train_row`), so a row always holds
exactly the declared keys; loading, leaderboards and reproduction read the same declaration
(:func:`problem` says why a row cannot be used). ``schema`` in each row is :data:`SCHEMA_VERSION`:
rows of an older schema still load where they carry what a reader needs.

Version history: 1 — until the metric registry (no ``schema`` key); 2 — knowledge, no-information
baseline (``baseline``, ``baseline_<metric>``), ``state_accuracy``, ``tuning``, ``targets_per_call``;
3 — ``attribution`` (whether the server could tell which of an aggregate's reconstructions is the target's);
4 — ``round`` (the attacked client's round, :mod:`bench.round`; older rows are FedSGD at their batch size) and
``diagnostics`` (the defense's evaluator-only numbers, which attacks never see).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.errors import PluginError
from bench.metrics import REGISTRY, image_metrics

SCHEMA_VERSION = 4

#: keys of every row (provenance: bench.provenance.stamp)
COMMON = (
    "schema",
    "kind",
    "run_id",
    "defense",
    "dataset",
    "model",
    "seed",
    "config",
    "versions",
    "git",
    "machine",
    "timestamp",
)
ATTACK = COMMON + (
    "attack",
    "target",
    "status",
    "batch_size",
    "round",
    "attack_round",
    "knowledge",
    "state_accuracy",
    "lpips_note",
    "baseline",
    *(f"baseline_{m.name}" for m in image_metrics() if m.baseline),
    *REGISTRY,
    "diverged",
    "attack_loss",
    "attack_iterations",
    "attack_seconds",
    "targets_per_call",
    "observe_seconds",
    "observed_kind",
    "num_reconstructed",
    "attribution",
    "target_client",
    "image_ids",
    "true_labels",
    "predicted_labels",
    "per_image",
    "defense_metrics",
    "diagnostics",
    "attack_info",
    "notes",
    "tuning",
    "image_file",
)
TRAIN = COMMON + (
    "rounds",
    "clients",
    "final_accuracy",
    "evaluated",
    "accuracy_per_round",
    "seconds_per_round",
    "modelled_seconds_per_round",
    "bytes_uploaded_per_client_per_round",
    "optimiser",
    "optimiser_rule",
    "optimiser_deviations",
    "lr_tuning",
    "history",
    "total_seconds",
)
FIELDS = {"attack": ATTACK, "train": TRAIN}

#: what a leaderboard needs of a row, whatever its schema version
REQUIRED = {
    "attack": ("run_id", "config", "psnr", "ssim", "status"),
    "train": ("run_id", "config", "final_accuracy"),
}
REQUIRED_CONFIG = {"attack": ("defense", "attack", "dataset", "model", "run"), "train": ("defense", "dataset", "model")}


def _row(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    row = {"schema": SCHEMA_VERSION, "kind": kind, **values}
    declared = FIELDS[kind]
    missing = [k for k in declared if k not in row]
    extra = [k for k in row if k not in declared]
    if missing or extra:  # a bug in bench, not bad input: the declaration and the writer disagree
        raise PluginError(f"{kind} row does not match schema {SCHEMA_VERSION}: missing {missing}, undeclared {extra}")
    return {k: row[k] for k in declared}


def attack_row(**values: Any) -> dict[str, Any]:
    """An attack row (one target) with exactly the declared keys, in the declared order."""
    return _row("attack", values)


def train_row(**values: Any) -> dict[str, Any]:
    """A training row (one run) with exactly the declared keys, in the declared order."""
    return _row("train", values)


def problem(row: Mapping[str, Any]) -> str | None:
    """Why a leaderboard cannot use ``row`` (None: it can)."""
    kind = row.get("kind")
    if kind not in REQUIRED:
        return f"kind {kind!r} is not one leaderboards use ('attack' or 'train')"
    missing = [k for k in REQUIRED[kind] if k not in row]
    config = row.get("config")
    if not missing and isinstance(config, dict):
        missing = [f"config.{k}" for k in REQUIRED_CONFIG[kind] if not isinstance(config.get(k), dict)]
    elif not missing:
        missing = ["config (a table)"]
    return f"{kind} row without {', '.join(missing)}" if missing else None
