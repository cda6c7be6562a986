"""Switch-free recovery of a convolution block's input from the rank of its weight gradient.

For one example, a convolution's weight gradient is ``∂L/∂W = Δ Pᵀ`` (R-GAP's equation, Zhu &
Blaschko, ICLR 2021, §3): Δ [C_out, L] is the upstream gradient at the L output positions, P
[C_in·k², L] the input's patches. When L < C_out and L < C_in·k² (few positions, many channels: the
top of a CNN, e.g. conv3 of the HyperFL paper's CNN on 32×32 images, 6×6 positions and 64 channels),
Δ generically has full column rank L, so the row space of ∂L/∂W *is* the span of the L patches.
Every patch of the block's input v then lies in that L-dimensional subspace S, which is a homogeneous
linear system in v, ``Π⊥ p_l(v) = 0`` for every position l (Π⊥ the projection onto S's
complement). Its null space is generically one-dimensional. The null vector gives v up to a scale,
*without* the max-pool switches that the recursion of :mod:`bench.inversion.recursive` needs and
that an estimate gets wrong (benchmarks/rgap_switches.py).

The scale and sign come from the block's known output, i.e. its activation's and max-pool's output:
the leaky linear layer's input, or a block above that was already recovered. For each sign, α is
the least-squares fit of the forward pass at the switches that α·v itself gives, repeated until the
switches stop changing. The sign whose output fits better wins.

This follows from R-GAP's equations but is not a method of the papers. It needs an exact
one-example gradient. Noise (dp), an aggregate of several examples or clients (he), zeroed entries
(pruning, Soteria) or several local steps break the rank structure, and the checks below then refuse,
giving the reason: the gradient's numerical rank must be L, the null space must be one-dimensional,
and the recovered input must reproduce the block's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.inversion.linear import as_gradient
from bench.inversion.recursive import (
    BlockEvidence,
    ConvBlock,
    block_output,
    chain_states,
    inverse_activation,
    unobserved,
)
from bench.threat import Observation, Tensors

RANK_GAP = 1e-3  # σ_{L+1}/σ_L of the weight gradient, and √(λ₁/λ₂) of the null-space system, at most
OUTPUT_TOL = 1e-4  # relative residual of the block's output at the recovered input, at most
MAX_INPUTS = 4096  # inputs (C·H·W) of a block this dense solve handles (its Gram matrix is n×n float64)
REACHED_IMAGE = "reached the image"  # ``stopped`` when every block was peeled: the matched input is the image


@dataclass
class MatchTarget:
    """What the image recovery matches: the input of one module, known exactly, and the upstream gradient
    there (the leaky layer's reading, or the input of the lowest convolution block peeled below it)."""

    layer: str  # the module whose input is matched
    features: torch.Tensor  # that input, flat
    known: torch.Tensor  # which of its entries are known (float 0/1)
    upstream: torch.Tensor  # ∂L/∂(that input), flat


@dataclass
class Peeled:
    """One block's input recovered from its weight gradient's row space, and the upstream gradient there."""

    block: ConvBlock
    inputs: torch.Tensor  # [C, H, W], float64
    upstream: torch.Tensor  # ∂L/∂(inputs), float64
    residual: float  # relative residual of the block's output at ``inputs``
    null_ratio: float  # √(λ₁/λ₂) of the null-space system: ≪ 1 means a one-dimensional null space


def _null_system(block: ConvBlock, basis: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The Gram matrix Σ_l E_lᵀ Π⊥ E_l [n, n] of the system ``Π⊥ p_l(v) = 0`` (E_l: patch l's entries of v;
    padding entries are zero and drop out), with Π⊥ = I − basis basisᵀ."""
    n = shape[0] * shape[1] * shape[2]
    index = torch.arange(1, n + 1, dtype=torch.float64, device=basis.device).reshape(1, *shape)
    patches = F.unfold(index, block.kernel, padding=block.padding, stride=block.stride)[0].round().long() - 1
    projection = torch.eye(basis.shape[0], dtype=torch.float64, device=basis.device) - basis @ basis.T
    gram = torch.zeros(n, n, dtype=torch.float64, device=basis.device)
    for entries in patches.T:  # one output position at a time: its patch's input entries (−1: padding)
        valid = entries >= 0
        rows = entries[valid]
        gram.index_put_((rows[:, None], rows[None, :]), projection[valid][:, valid], accumulate=True)
    return gram


def peel_block(evidence: BlockEvidence, input_shape: tuple[int, int, int]) -> Peeled | str:
    """The block's input from its evidence (its weight gradient's row space, then its output for the scale),
    and the upstream gradient at that input; or why it cannot be had."""
    block = evidence.block
    w, b = evidence.weight.double(), evidence.bias.double()
    out, up = evidence.output.double(), evidence.upstream.double()
    cout = w.shape[0]
    g = evidence.gradient.double().reshape(cout, -1)
    n = input_shape[0] * input_shape[1] * input_shape[2]
    height = (input_shape[1] + 2 * block.padding - block.kernel) // block.stride + 1
    width = (input_shape[2] + 2 * block.padding - block.kernel) // block.stride + 1
    positions = height * width
    if not positions < min(cout, g.shape[1]):
        return (
            f"{block.name} has {positions} output positions, not fewer than its {cout} channels and "
            f"{g.shape[1]} patch entries"
        )
    if n > MAX_INPUTS:
        return f"{block.name}'s input has {n} entries (this dense solve handles at most {MAX_INPUTS})"
    _, sigma, vh = torch.linalg.svd(g, full_matrices=False)
    gap = float(sigma[positions] / sigma[positions - 1].clamp_min(1e-300))
    if not gap <= RANK_GAP:
        return (
            f"{block.name}'s weight gradient does not have rank {positions} (σ ratio {gap:.1e}: noise, several "
            f"examples or steps, or zeroed entries)"
        )
    eigenvalues, vectors = torch.linalg.eigh(_null_system(block, vh[:positions].T, input_shape))
    ratio = float((eigenvalues[0].clamp_min(0) / eigenvalues[1].clamp_min(1e-300)).sqrt())
    if not ratio <= RANK_GAP:
        return f"the patches of {block.name}'s input are not determined up to scale (null-space ratio {ratio:.1e})"
    direction = vectors[:, 0].reshape(input_shape)
    inputs, residual = _scale(block, w, b, out, direction)
    if not residual <= OUTPUT_TOL:
        return f"the recovered input of {block.name} does not reproduce its output (relative residual {residual:.1e})"
    x = inputs.clone().requires_grad_(True)
    with torch.enable_grad():
        (up_in,) = torch.autograd.grad((block_output(block, w, b, x) * up).sum(), x)
    return Peeled(block, inputs, up_in.detach(), residual, ratio)


def _scale(
    block: ConvBlock, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor, direction: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """α·direction with the α (either sign) whose block output fits ``out`` best, and its relative residual."""
    z_seen, _ = inverse_activation(block, out)
    a = F.conv2d(direction[None], w, None, block.stride, block.padding)[0]
    best: tuple[torch.Tensor, float] | None = None
    for sign in (1.0, -1.0):
        alpha, switches = sign, None
        for _ in range(50):
            z = alpha * a + b[:, None, None]
            if block.pool > 1:
                index = F.max_pool2d(z[None], block.pool, return_indices=True)[1][0]
                if switches is not None and torch.equal(index, switches):
                    break
                switches = index
                seen = a.flatten(1).gather(1, index.flatten(1)).reshape(z_seen.shape)
            else:
                seen = a
            alpha = float(((z_seen - b[:, None, None]) * seen).sum() / (seen * seen).sum().clamp_min(1e-300))
            if block.pool == 1:
                break
        candidate = alpha * direction
        residual = float((block_output(block, w, b, candidate) - out).norm() / out.norm().clamp_min(1e-300))
        if best is None or residual < best[1]:
            best = (candidate, residual)
    assert best is not None
    return best


def peel_chain(
    obs: Observation, top: MatchTarget, state: Tensors, chain: list[ConvBlock] | str
) -> tuple[MatchTarget, dict[str, Any]]:
    """Go down ``chain`` (the convolutions below ``top.layer``, from ``conv_chain``; or why there are none)
    while each block's input can be had from its weight gradient's row space; the lowest input reached is
    what an image recovery then matches, with the exact upstream gradient there. Returns it and what was
    done (``blocks``, their relative residuals, why it ``stopped``)."""
    if isinstance(chain, str) or not chain:
        return top, {"blocks": [], "stopped": chain or f"nothing below {top.layer}"}
    if not bool(top.known.all()):
        return top, {"blocks": [], "stopped": f"{top.layer}'s input is not known entirely"}
    probe = torch.zeros(obs.public.image_shape, device=top.features.device)
    shapes = [tuple(s.shape) for s in chain_states(chain, state, probe)]
    output, upstream = top.features.reshape(shapes[-1]), top.upstream.reshape(shapes[-1])
    target, peeled, residuals, stopped = top, [], [], ""
    for block, shape in zip(reversed(chain), reversed(shapes[:-1])):
        missing = unobserved(obs, block, state)
        if missing:
            stopped = missing
            break
        evidence = BlockEvidence.of(block, state, as_gradient(obs, block.weight_key), output, upstream)
        result = peel_block(evidence, shape)  # type: ignore[arg-type]
        if isinstance(result, str):
            stopped = result
            break
        output, upstream = result.inputs, result.upstream
        dtype = top.features.dtype
        flat = output.flatten().to(dtype)
        target = MatchTarget(block.name, flat, torch.ones_like(flat), upstream.flatten().to(dtype))
        peeled.append(block.name)
        residuals.append(result.residual)
    return target, {"blocks": peeled, "relative_residuals": residuals, "stopped": stopped or REACHED_IMAGE}
