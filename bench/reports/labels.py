"""How a leaderboard names and explains what it shows: the notes printed above every board, readable labels
of component configs (only the options that differ), and scenario titles."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bench.round import Round
from bench.reports.stats import DEFAULT_SUCCESS, SUCCESS_WHY, SuccessRule


PRIVACY_NOTE = (
    "Privacy: lower PSNR and SSIM, higher LPIPS, lower label accuracy and fewer recovered targets mean "
    "MORE privacy (the attacker's reconstruction is worse). Arrows point the way that is better for "
    "the defense: more privacy, more accuracy, less cost."
)
KNOWLEDGE_NOTE = (
    "Knowledge: what the attacker knows (unaware: ignores the defense; adaptive: knows and exploits "
    "its mechanism; oracle: is handed the client's private state). An oracle bounds knowledge, not "
    "leakage: a weaker optimiser with more knowledge can reconstruct worse."
)
VALUES_NOTE = (
    "Values per attack: over all attacked targets of all seeds (N), the median, the mean ± sample std and "
    "a 95 % bootstrap interval of the mean; 'recovered' is the success rate; 'gain' is the median of "
    "PSNR minus the target's no-information baseline (the better of the training set's mean image and its "
    "flat mean colour). An attack run under several settings (e.g. defaults and a tuning) shows its "
    "strongest. Accuracy: mean over clients of local-test accuracy after the defense's training runs, "
    "mean ± std over training seeds (n); s/round (wall time, plus the encryption and decryption time a "
    "simulated CKKS backend models from TenSEAL's rates) and MB/round (uploaded per client) from the same runs; "
    "ε (δ) of the training run and of the attacked exchange where the defense reports them."
)


def ranking_rule(tolerance: float) -> str:
    return (
        f"Ranking (privacy at equal utility): defenses are put in utility tiers by how far their accuracy is "
        f"below the best in the table, {tolerance:g} accuracy points per tier (tier 0: within {tolerance:g} "
        f"points of the best); entries without a training run come after all tiers. Within a tier, the lower "
        f"the strongest attack's median PSNR (the worst case over attacks and their settings) the better; ties by "
        f"success rate, then accuracy."
    )


def diverged_rule(mode: str) -> str:
    if mode == "include":
        return (
            "Diverged attack runs (non-finite objective; their best finite iterate is scored) are INCLUDED in "
            "the statistics and counted in N; '(k div.)' says how many of N diverged."
        )
    return (
        "Diverged attack runs (non-finite objective) are EXCLUDED from the statistics, so a failed optimisation "
        "is never averaged in as a result; '+k div.' after N counts them. An attack with only diverged runs "
        "shows n/a and does not count as the strongest attack."
    )


def success_note(rule: SuccessRule) -> str:
    text = f"Recovered (success rate): {rule.describe()}"
    return text + (f"; {SUCCESS_WHY}." if rule.text() == DEFAULT_SUCCESS else " (set with --success).")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Readable names for component configs: the name, plus the options that differ between configs
    of the same component (``dp(noise_multiplier=0.1)`` vs ``dp(noise_multiplier=1)``)."""
    by_name: dict[str, list[str]] = {}
    for key, config in configs.items():
        by_name.setdefault(str(config.get("name")), []).append(key)
    labels = {}
    for name, keys in by_name.items():
        options = sorted({k for key in keys for k in configs[key] if k != "name"})
        differing = [o for o in options if len({canonical(configs[key].get(o)) for key in keys}) > 1]
        for key in keys:
            args = ", ".join(f"{o}={_short(configs[key].get(o))}" for o in differing)
            labels[key] = f"{name}({args})" if args else name
    return labels


def recorded_round(row: Mapping[str, Any]) -> Round:
    """The attacked round a row records. Rows from before rounds were recorded are FedSGD at their batch size,
    except HyperFL's ``attack_setting=local`` rows, whose round ran over ``attack_local_batches`` mini-batches
    (the attacked one first) after its head epoch."""
    config = row["config"]
    run = config["run"]
    batch = run.get("batch_size") or 1
    if run.get("round"):
        return Round.from_dict(run["round"], batch)
    defense = config.get("defense") or {}
    if defense.get("attack_setting") == "local" and defense.get("attack_local_batches"):
        epochs = defense.get("local_epochs") or (run.get("federation") or {}).get("local_epochs") or 1
        return Round(
            "local", batch, batch * int(defense["attack_local_batches"]), int(epochs), defense.get("head_epochs")
        )
    return Round("fedsgd", batch)


def scenario_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """What makes numbers comparable: data set, the attacked round (rows from before rounds were recorded are
    FedSGD at their batch size), the training round attacked, the federation."""
    run = row["config"]["run"]
    return {
        "dataset": row["config"]["dataset"],
        "batch_size": run.get("batch_size"),
        "round": recorded_round(row).as_dict(),
        "attack_round": run.get("attack_round"),
        "federation": run.get("federation"),
    }


def _scenario_label(scenario: Mapping[str, Any], dataset_label: str, distinguish: Sequence[str] = ()) -> str:
    """``distinguish``: further federation settings to show (those that differ between the board's scenarios)."""
    fed = scenario.get("federation") or {}
    round_ = scenario.get("attack_round")
    when = "untrained network (round 0)" if round_ == 0 else f"after {round_} training round(s)"
    exchange = Round.from_dict(scenario.get("round"), scenario.get("batch_size") or 1).label()
    parts = [dataset_label, exchange, when]
    if fed:
        parts.append(f"{fed.get('clients')} clients ({fed.get('partition')})")
        parts += [f"{k} {fed.get(k)}" for k in distinguish]
    return " · ".join(parts)


def _differing_federation(scenario_keys: Sequence[str]) -> list[str]:
    """Federation settings, other than clients and partition, that differ between scenarios."""
    feds = [json.loads(k).get("federation") or {} for k in scenario_keys]
    names = sorted({k for f in feds for k in f} - {"clients", "partition"})
    return [k for k in names if len({json.dumps(f.get(k)) for f in feds}) > 1]
