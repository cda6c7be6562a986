"""DLG against the gradient-pruning example, with the adaptive (masked) and DLG's own (clean) replay.

Reproduces the shape of the DLG paper's defense experiment on bench's default setting (photos,
sigmoid LeNet, one image, FedSGD, a fresh network per target) and shows what an attacker that uses
the sparsity pattern it receives does to that conclusion. Loads the example by file path, so the
example package need not be installed. Rows go to OUTPUT_DIR/<cell>/results.jsonl (finished targets of the
same configuration are reused), and a table of mean PSNR/SSIM per cell is printed.

    OMP_NUM_THREADS=1 python benchmarks/pruning_vs_dlg.py --targets 2 --ratios 0.2 0.7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.runs.attack import RunSpec, run
from bench.federation import FLSettings  # noqa: E402
from bench.components import Choice

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gradient-pruning" / "bench_gradient_pruning.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.7])
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300, help="DLG L-BFGS steps (paper: 300)")
    parser.add_argument("--output-dir", type=Path, default=Path("results/benchmarks/pruning_vs_dlg"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells = [("fedavg", Choice("fedavg"), None)]
    for ratio in args.ratios:
        for knowledge in ("unaware", "adaptive"):
            cells.append(
                (
                    f"pruning ratio={ratio} knowledge={knowledge}",
                    Choice(f"{EXAMPLE}:GradientPruning", {"ratio": ratio}),
                    knowledge,
                )
            )
    print(f"{'cell':<40} {'PSNR dB':>14} {'SSIM':>13} {'label acc':>9}")
    for label, defense, knowledge in cells:
        out = args.output_dir / label.replace(" ", "_").replace("=", "-")
        rows = run(
            RunSpec(
                defense=defense,
                attack=Choice("dlg", {"iterations": args.iterations}),
                output_dir=out,
                num_targets=args.targets,
                federation=FLSettings(clients=4),
                device="cpu",
                resume=True,
                knowledge=knowledge,
            )
        )
        psnr, ssim = np.array([r["psnr"] for r in rows]), np.array([r["ssim"] for r in rows])
        acc = np.mean([r["label_acc"] for r in rows])
        print(
            f"{label:<40} {psnr.mean():6.2f} ± {psnr.std():5.2f} {ssim.mean():5.3f} ± {ssim.std():5.3f} "
            f"{acc:9.2f}   (n={len(rows)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
