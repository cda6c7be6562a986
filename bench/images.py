"""Reconstruction grids: ground truth above reconstruction, saved as PNG (and the matplotlib set-up
every figure of ``bench.reports`` uses)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.results import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """The figure as PNG bytes (``savefig`` options such as ``dpi``); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    pyplot().close(fig)
    return buffer.getvalue()


def _to_hwc(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] to a single row image [H, N·(W+1), 3]."""
    images = images.detach().cpu().float().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    n, _, h, w = images.shape
    row = torch.ones(3, h, n * (w + 1) - 1)
    for i, img in enumerate(images):
        row[:, :, i * (w + 1) : i * (w + 1) + w] = img
    return row.permute(1, 2, 0)


def pair_image(truth: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Truth row above reconstruction row (images in [0, 1]) as [2H+1, W', 3] pixels."""
    top, bottom = _to_hwc(truth), _to_hwc(recon)
    gap = torch.ones(1, top.shape[1], 3)
    return torch.cat([top, gap, bottom], dim=0)


def save_pair_png(path: Path, truth: torch.Tensor, recon: torch.Tensor) -> None:
    """Lossless PNG of one target: ground truth above its matched reconstruction."""
    from PIL import Image

    pixels = (pair_image(truth, recon).numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_grid(
    path: Path,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    captions: Sequence[str],
    title: str = "",
    inches_per_pixel: float = 0.025,
) -> None:
    """One panel per target (truth above reconstruction) with a caption, stacked vertically.

    Images keep a fixed scale (``inches_per_pixel``) whatever their number, so small images stay small.
    """
    plt = pyplot()
    images = [pair_image(t, r).numpy() for t, r in pairs]
    margin, caption_h, title_h = 0.15, 0.22, 0.35 if title else 0.05
    sizes = [(img.shape[1] * inches_per_pixel, img.shape[0] * inches_per_pixel) for img in images]
    width = max(6.5, max(w for w, _ in sizes) + 2 * margin)
    height = title_h + sum(h + caption_h + margin for _, h in sizes)
    fig = plt.figure(figsize=(width, height))
    if title:
        fig.text(margin / width, 1 - 0.22 / height, title, fontsize=8, va="center")
    top = height - title_h
    for img, (w, h), caption in zip(images, sizes, captions):
        fig.text(margin / width, (top - caption_h / 2) / height, caption, fontsize=7, va="center")
        top -= caption_h + h
        ax = fig.add_axes((margin / width, top / height, w / width, h / height))
        ax.imshow(img, interpolation="nearest")
        ax.axis("off")
        top -= margin
    atomic_write_bytes(path, png_bytes(fig, dpi=150))
