"""Privacy, utility and cost of the ``dp`` and ``he`` defenses, from real runs (docs/defenses.md).

Parts (each resumable: finished attack targets and trainings are never recomputed):

* ``checks``: the attack setting of the DLG paper on the default data (photos, sigmoid LeNet, batch 1,
  20 clients, a fresh network per target), the same seed and targets for every defense: fedavg;
  dp with σ = 0 (C = 1, and C = 1e9, i.e. no clipping); dp with the HyperFL paper's preset; he with
  K = 1 and K = 4 clients, backend simulated and tenseal.
* ``tradeoff``: the privacy-utility trade-off of DP-SGD (level=sample, C = 1) on ``digits`` with
  LeNet, for several noise multipliers σ: federated training (5 clients, IID, batch 32, 20 rounds,
  momentum 0.5, lr 0.5 for dp and 0.05 for fedavg) gives accuracy and the ε spent by the run
  (δ = 1e-5); the attack (batch 1, same federation, fresh networks) gives PSNR.
* ``ckks``: CKKS cost and precision per client vector (15,826 values = LeNet, 100k, 1M), TenSEAL
  measured next to the simulated backend's model (needs TenSEAL).
* ``report``: reads the results and rewrites the generated blocks of docs/defenses.md and
  docs/figures/dp_tradeoff_<attack>.png (pure function of the results files).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/dp_he.py all --attack dlg --targets 3

``--attack`` picks any registered attack (e.g. ``ig``), ``--attack-arg k=v`` its
options; results go to ``results/benchmarks/dp-he/<attack>/``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runs.attack import RunSpec, run, run_id  # noqa: E402
from doc_tables import mean_std  # noqa: E402
from bench.federation import FLSettings  # noqa: E402
from bench.options import parse_assignments  # noqa: E402
from bench.results import RESULTS_FILE, read_rows  # noqa: E402
from bench.components import Choice  # noqa: E402
from bench.runs.train import TrainSpec, resolved_config, run_training  # noqa: E402

SEED = 0
#: label → (defense, options) for the attack checks on the default data.
CHECKS: dict[str, tuple[str, dict[str, Any]]] = {
    "fedavg": ("fedavg", {}),
    "dp σ=0, C=1e9 (no clipping)": ("dp", {"noise_multiplier": 0.0, "clip": 1e9}),
    "dp σ=0, C=1": ("dp", {"noise_multiplier": 0.0, "clip": 1.0}),
    "dp hyperfl-paper (C=0.04, ε=4)": ("dp", {"preset": "hyperfl-paper"}),
    "he K=1 simulated": ("he", {"clients": 1, "backend": "simulated"}),
    "he K=1 tenseal": ("he", {"clients": 1, "backend": "tenseal"}),
    "he K=4 simulated": ("he", {"clients": 4, "backend": "simulated"}),
    "he K=4 tenseal": ("he", {"clients": 4, "backend": "tenseal"}),
}
TRADEOFF_SIGMAS = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0)
#: Clipping to C = 1 shrinks LeNet's per-example gradients (norms ~30 at initialisation, ~3 later) so
#: DP-SGD runs take a 10× larger learning rate, the usual DP-SGD practice; with σ = 0 that reaches
#: fedavg's accuracy (0.953 vs 0.940), while lr 0.05 with clipping stalls at 0.57 after 20 rounds.
FEDAVG_SGD, DP_SGD = {"lr": 0.05, "momentum": 0.5}, {"lr": 0.5, "momentum": 0.5}
TRADEOFF_FEDERATION = FLSettings(clients=5, partition="iid", batch_size=32, rounds=20, eval_every=5)
TRADEOFF_DATA, TRADEOFF_MODEL, TRADEOFF_CLIP = "digits", "lenet", 1.0


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label.replace("σ", "sigma").replace("ε", "eps")).strip("-")


def attack_runs(
    out: Path,
    attack: Choice,
    targets: int,
    runs: dict[str, tuple[str, dict[str, Any]]],
    dataset: str = "photos",
    model: str | None = None,
    federation: FLSettings = FLSettings(),  # noqa: B008 (frozen dataclass: an immutable default)
) -> None:
    for label, (defense, options) in runs.items():
        print(f"[attack] {label}", flush=True)
        spec = RunSpec(
            defense=Choice(defense, options),
            attack=attack,
            output_dir=out / slug(label),
            dataset=Choice(dataset),
            model=Choice(model) if model else None,
            batch_size=1,
            num_targets=targets,
            seed=SEED,
            federation=federation,
            resume=True,
        )
        run(spec, log=lambda m: print("   ", m, flush=True))


def tradeoff_defenses() -> dict[str, tuple[str, dict[str, Any]]]:
    runs = {"fedavg": ("fedavg", dict(FEDAVG_SGD))}
    for sigma in TRADEOFF_SIGMAS:
        runs[f"dp σ={sigma:g}"] = (
            "dp",
            {**DP_SGD, "level": "sample", "clip": TRADEOFF_CLIP, "noise_multiplier": sigma},
        )
    return runs


def training_runs(out: Path, runs: dict[str, tuple[str, dict[str, Any]]]) -> None:
    for label, (defense, options) in runs.items():
        folder = out / slug(label)
        spec = TrainSpec(
            defense=Choice(defense, options),
            output_dir=folder,
            federation=TRADEOFF_FEDERATION,
            dataset=Choice(TRADEOFF_DATA),
            model=Choice(TRADEOFF_MODEL),
            seed=SEED,
        )
        done = run_id(resolved_config(spec))  # the same configuration trained before (sweeps resume the same way)
        if (folder / RESULTS_FILE).exists() and any(
            r.get("run_id") == done for r in read_rows(folder / RESULTS_FILE)[0]
        ):
            continue
        print(f"[train] {label}", flush=True)
        row = run_training(spec)
        print(f"    accuracy {row['final_accuracy']:.4f}, epsilon {row['history'][-1].get('epsilon')}", flush=True)


def ckks_costs(out: Path, sizes: tuple[int, ...] = (15_826, 100_000, 1_000_000), repeats: int = 3) -> None:
    """CKKS costs and precision per client vector, TenSEAL measured next to the simulated model (one row per size)."""
    import time

    import torch

    from bench.results import append_rows
    from bench.defenses.he import CKKSParams, make_roles

    params = CKKSParams()
    real, sim = (
        make_roles("tenseal", params, torch.Generator()),
        make_roles("simulated", params, torch.Generator().manual_seed(SEED)),
    )
    rows = []
    for size in sizes:
        values = 0.01 * torch.randn(size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
        timing: dict[str, list[float]] = {"encrypt": [], "add": [], "decrypt": []}
        for _ in range(repeats):
            began = time.perf_counter()
            messages = [real.encryptor.encrypt(values, None) for _ in range(4)]
            timing["encrypt"].append((time.perf_counter() - began) / 4)
            began = time.perf_counter()
            total = real.aggregator.add(messages)
            timing["add"].append(time.perf_counter() - began)
            began = time.perf_counter()
            decrypted = real.key_holder.decrypt(total, size)
            timing["decrypt"].append(time.perf_counter() - began)
        one = real.key_holder.decrypt(real.aggregator.add(messages[:1]), size) - values
        sim_message = sim.encryptor.encrypt(values, torch.Generator().manual_seed(1))
        simulated = sim.key_holder.decrypt(sim.aggregator.add([sim_message]), size) - values
        rows.append(
            {
                "kind": "ckks",
                "values": size,
                "ciphertexts": params.ciphertexts(size),
                "tenseal_bytes": real.encryptor.wire_bytes(messages[0]),
                "simulated_bytes": sim.encryptor.wire_bytes(sim_message),
                "plaintext_bytes": 4 * size,
                "encrypt_seconds": float(np.median(timing["encrypt"])),
                "add4_seconds": float(np.median(timing["add"])),
                "decrypt_seconds": float(np.median(timing["decrypt"])),
                "tenseal_error_std": float(one.std()),
                "tenseal_error_max": float(one.abs().max()),
                "sum4_error_max": float((decrypted - 4 * values).abs().max()),
                "simulated_error_std": float(simulated.std()),
                "simulated_error_max": float(simulated.abs().max()),
                "model_error_std": params.error_std(),
            }
        )
        print(f"[ckks] {size} values: {rows[-1]}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).unlink(missing_ok=True)
    append_rows(out / RESULTS_FILE, rows)


def ckks_table(out: Path) -> str:
    lines = [
        "| values per client | ciphertexts | TenSEAL bytes | simulated bytes (uncompressed) | expansion (TenSEAL) | "
        "encrypt s | add 4 s | decrypt s | error std TenSEAL / simulated / model | max error TenSEAL / simulated |",
        "|" + "---|" * 10,
    ]
    for r in rows_of(out, "ckks"):
        lines.append(
            f"| {r['values']:,} | {r['ciphertexts']} | {r['tenseal_bytes']:,} | {r['simulated_bytes']:,} | "
            f"{r['tenseal_bytes'] / r['plaintext_bytes']:.1f}× | {r['encrypt_seconds']:.3f} | "
            f"{r['add4_seconds']:.3f} | {r['decrypt_seconds']:.3f} | {r['tenseal_error_std']:.3g} / "
            f"{r['simulated_error_std']:.3g} / {r['model_error_std']:.3g} | {r['tenseal_error_max']:.2g} / "
            f"{r['simulated_error_max']:.2g} |"
        )
    return "\n".join(lines)


# --- report -------------------------------------------------------------------------------------------
def rows_of(folder: Path, kind: str) -> list[dict[str, Any]]:
    """The rows of one kind in a results file; of attack rows, the latest per target."""
    path = folder / RESULTS_FILE
    rows = [r for r in read_rows(path)[0] if r.get("kind") == kind] if path.exists() else []
    if kind == "attack":
        rows = sorted({r["target"]: r for r in rows}.values(), key=lambda r: r["target"])
    return rows


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def checks_table(out: Path) -> str:
    lines = [
        "| defense | PSNR dB (mean ± std) | SSIM | PSNR per target | ε of the exchange, q = 1 (δ=1e-5) | "
        "ε accounted, q = B/n | σ | bytes/client | expansion | encrypt s | aggregate s | decrypt s |",
        "|" + "---|" * 12,
    ]
    for label in CHECKS:
        rows = rows_of(out / slug(label), "attack")
        if not rows:
            continue
        m = rows[0]["defense_metrics"]
        infinite = "epsilon" in m and m["epsilon"] is None
        lines.append(
            f"| {label} | {mean_std([r['psnr'] for r in rows], 2)} | {mean_std([r['ssim'] for r in rows], 3)} | "
            f"{', '.join(format(r['psnr'], '.1f') for r in rows)} | "
            f"{'∞' if infinite else fmt(m.get('epsilon_exchange'), '.3g')} | "
            f"{'∞' if infinite else fmt(m.get('epsilon'), '.3g')} | "
            f"{fmt(m.get('noise_multiplier'), '.3g')} | {fmt(m.get('bytes_uploaded'), ',')} | "
            f"{fmt(m.get('expansion_factor'), '.1f')} | "
            + " | ".join(
                fmt(mean_or_none([r["defense_metrics"].get(k) for r in rows]), ".4f")
                for k in ("encrypt_seconds", "aggregate_seconds", "decrypt_seconds")
            )
            + " |"
        )
    return "\n".join(lines)


def mean_or_none(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def tradeoff_points(out: Path) -> list[dict[str, Any]]:
    points = []
    for label, (defense, options) in tradeoff_defenses().items():
        train = rows_of(out / "train" / slug(label), "train")
        attack = rows_of(out / "attack" / slug(label), "attack")
        if not train or not attack:
            continue
        last = train[-1]["history"][-1]
        points.append(
            {
                "label": label,
                "sigma": options.get("noise_multiplier"),
                "epsilon": last.get("epsilon") if defense == "dp" else None,
                "accuracy": train[-1]["final_accuracy"],
                "psnr": [r["psnr"] for r in attack],
                "ssim": [r["ssim"] for r in attack],
                "attack_epsilon": attack[0]["defense_metrics"].get("epsilon_exchange"),
                "attack_epsilon_amplified": attack[0]["defense_metrics"].get("epsilon"),
                "steps": last.get("dp_steps"),
                "q": last.get("sample_rate"),
            }
        )
    return points


def tradeoff_table(points: list[dict[str, Any]]) -> str:
    lines = [
        "| defense | σ | ε of the training run | test accuracy | attack PSNR dB | attack SSIM | "
        "ε of the attacked exchange (q = 1) | its ε with amplification (q = 1/n) |",
        "|" + "---|" * 8,
    ]
    for p in points:
        eps = "∞" if p["sigma"] == 0 else fmt(p["epsilon"], ".3g") if p["sigma"] is not None else "— (no DP)"
        att, amp = (
            "∞" if p["sigma"] == 0 else fmt(p[key], ".3g") if p["sigma"] is not None else "—"
            for key in ("attack_epsilon", "attack_epsilon_amplified")
        )
        lines.append(
            f"| {p['label']} | {fmt(p['sigma'], 'g')} | {eps} | {p['accuracy']:.3f} | "
            f"{mean_std(p['psnr'], 2)} | {mean_std(p['ssim'], 3)} | {att} | {amp} |"
        )
    return "\n".join(lines)


def tradeoff_plot(points: list[dict[str, Any]], path: Path, attack: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [p for p in points if p["epsilon"] is not None and math.isfinite(p["epsilon"])]
    finite.sort(key=lambda p: p["epsilon"])
    if not finite:
        return
    baseline = next((p for p in points if p["label"] == "fedavg"), None)
    fig, (ax_psnr, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    eps = [p["epsilon"] for p in finite]
    ax_psnr.errorbar(
        eps,
        [np.mean(p["psnr"]) for p in finite],
        yerr=[np.std(p["psnr"]) for p in finite],
        marker="o",
        capsize=3,
        label="dp (DP-SGD, C = 1)",
    )
    ax_acc.plot(eps, [p["accuracy"] for p in finite], marker="o", label="dp (DP-SGD, C = 1)")
    for i, p in enumerate(finite):
        ax_psnr.annotate(
            f"σ={p['sigma']:g}",
            (p["epsilon"], np.mean(p["psnr"])),
            textcoords="offset points",
            xytext=(2, 6 if i % 2 else 16),
            fontsize=7,
        )
        ax_acc.annotate(
            f"σ={p['sigma']:g}", (p["epsilon"], p["accuracy"]), textcoords="offset points", xytext=(5, -10), fontsize=7
        )
    if baseline:
        ax_psnr.axhline(np.mean(baseline["psnr"]), color="grey", ls="--", label="fedavg (no defense)")
        ax_acc.axhline(baseline["accuracy"], color="grey", ls="--", label="fedavg (no defense)")
    unnoised = next((p for p in points if p["sigma"] == 0), None)
    if unnoised:
        ax_psnr.axhline(np.mean(unnoised["psnr"]), color="tab:blue", ls=":", label="dp σ = 0 (clipping only, ε = ∞)")
        ax_acc.axhline(unnoised["accuracy"], color="tab:blue", ls=":", label="dp σ = 0 (clipping only, ε = ∞)")
    for ax, title in (
        (ax_psnr, f"{attack} attack PSNR (batch 1, untrained LeNet)"),
        (ax_acc, "test accuracy after 20 rounds (5 clients)"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("ε spent by the training run (δ = 1e-5, Opacus RDP)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_psnr.set_ylabel("PSNR (dB)")
    ax_acc.set_ylabel("accuracy")
    fig.suptitle("DP-SGD privacy-utility trade-off on digits (LeNet)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def replace_block(text: str, name: str, content: str, after: str | None = None) -> str:
    """Rewrite the generated block ``name``; a block that does not exist yet is inserted after the
    end marker of block ``after`` (so each attack gets its own tables and the others are kept)."""
    begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        anchor = f"<!-- generated:{after}:end -->" if after else None
        if anchor is None or anchor not in text:
            raise SystemExit(f"docs/defenses.md lacks the markers {begin} … {end}")
        return text.replace(anchor, f"{anchor}\n\n{begin}\n{content}\n{end}", 1)
    return pattern.sub(lambda _: f"{begin}\n{content}\n{end}", text)


def report(out: Path, attack: str, docs: Path) -> None:
    """Rewrite this attack's blocks of docs/defenses.md (``checks-ATTACK``, ``tradeoff-ATTACK``, new
    ones after the ``dlg`` blocks), the shared CKKS block and ``figures/dp_tradeoff_ATTACK.png``."""
    page = docs / "defenses.md"
    text = page.read_text()
    checks = checks_table(out / "checks")
    points = tradeoff_points(out / "tradeoff")
    print(checks, "\n")
    print(tradeoff_table(points))
    figure = f"figures/dp_tradeoff_{attack}.png"
    text = replace_block(text, f"checks-{attack}", f"Attack: `{attack}`.\n\n{checks}", after="checks-dlg")
    if rows_of(out.parent / "ckks", "ckks"):  # the CKKS costs do not depend on the attack: keep them if absent
        text = replace_block(text, "ckks", ckks_table(out.parent / "ckks"))
    text = replace_block(
        text,
        f"tradeoff-{attack}",
        f"Attack: `{attack}`.\n\n![DP-SGD privacy-utility trade-off, {attack}]({figure})\n\n{tradeoff_table(points)}",
        after="tradeoff-dlg",
    )
    page.write_text(text)
    if points:
        tradeoff_plot(points, docs / figure, attack)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["checks", "tradeoff", "ckks", "report", "all"])
    parser.add_argument("--attack", default="dlg")
    parser.add_argument("--attack-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--targets", type=int, default=3, help="attacked batches per configuration")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "benchmarks" / "dp-he")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    attack = Choice(args.attack, parse_assignments(args.attack_arg, "--attack-arg"))
    out = args.output / args.attack
    if args.part in ("checks", "all"):
        attack_runs(out / "checks", attack, args.targets, CHECKS)
    if args.part in ("tradeoff", "all"):
        training_runs(out / "tradeoff" / "train", tradeoff_defenses())
        attack_runs(
            out / "tradeoff" / "attack",
            attack,
            args.targets,
            tradeoff_defenses(),
            dataset=TRADEOFF_DATA,
            model=TRADEOFF_MODEL,
            federation=TRADEOFF_FEDERATION,
        )
    if args.part in ("ckks", "all"):
        ckks_costs(args.output / "ckks")
    if args.part in ("report", "all"):
        report(out, args.attack, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
