"""A block's input through its max-pool: the switches searched, not read off an estimate.

R-GAP's recursion (:mod:`bench.inversion.recursive`) solves a convolution block's input v from its
forward pass and its weight gradient ``∂L/∂W = Δ Pᵀ``, both linear in v once the max-pool's *switches*
are known (which entry of each window survived). Taken from an estimate's argmax, many are wrong
(near-ties within the windows), and refreshing them from the least-squares solution's own argmax
does not repair them: the solution bends to fit the wrong switches, and its argmax keeps them
(benchmarks/rgap_switches.py measures how many are wrong).

Here the switches are *searched*, by the residual of the block's own equations rather than by the
argmax. With v fixed, each window's switch is chosen among its k² positions, one window at a time
(coordinate descent), to minimise the same scaled residual that the least-squares solve minimises,
plus the max-pool's inequality: the window's other entries may not exceed the seen maximum.

- The forward pass at the candidate: ``(W ⊛ v + b)`` there must equal the seen pre-activation.
- The weight gradient: moving a window's upstream gradient from position s to s′ changes channel c's
  gradient row by ``d (p_s′ − p_s)`` (p: the patch at that position), so every candidate is scored
  exactly in O(C·k²·patch) without a new solve.
- The inequality: ``Σ relu(z_o − z_seen)²`` over the window's other positions o.

Then v is solved again (CGLS) with the new switches, and the two steps alternate until no switch
moves, or for at most ``ROUNDS`` rounds. The search step lowers the residual plus the inequality
term; the least-squares step lowers the residual alone, so the alternation need not be monotone in
the sum, and in practice it settles within a few rounds. On FedAvg's CNN, from the
gradient-matching image and conv3's exact peeled input, ``benchmarks/descent.py`` compares the
relative error of conv2's input three ways: the image's own, the argmax refresh's, and this search's.

This is our method, built on R-GAP's equations (Zhu & Blaschko, ICLR 2021, §3); it is not a method of
the papers. Like the recursion, it needs an exact one-example gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.inversion.recursive import (
    BlockEvidence,
    BlockSolution,
    output_hw,
    inverse_activation,
    pool_switches,
    solve_at,
)

ROUNDS = 10  # at most this many alternations of switch search and least squares (the tuning seeds settle in 6–8)


@dataclass
class SwitchSearch:
    """The block's input found with searched switches, and how the search went."""

    solution: BlockSolution
    switches: torch.Tensor | None  # max_pool2d's indices [C, H/k, W/k] (None without a pool)
    moved: list[int]  # switches changed in each round


def window_positions(height: int, width: int, pool: int) -> torch.Tensor:
    """[windows, pool²]: the flat positions (in the height × width map) of each max-pool window's entries."""
    rows, cols = torch.meshgrid(torch.arange(height // pool), torch.arange(width // pool), indexing="ij")
    return torch.stack(
        [((pool * rows + a) * width + pool * cols + b).flatten() for a in range(pool) for b in range(pool)], 1
    )


def choose_switches(evidence: BlockEvidence, inputs: torch.Tensor, switches: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One sweep of coordinate descent over the windows: each window's switch (all channels at once)
    becomes the position that minimises the block's scaled residual at ``inputs`` plus the max-pool's
    inequality. Returns the new switches and how many moved."""
    block = evidence.block
    w, b, g = evidence.weight.double(), evidence.bias.double(), evidence.gradient.double()
    cout = w.shape[0]
    z_seen, slope = inverse_activation(block, evidence.output.double())
    seen_z = z_seen.reshape(cout, -1)  # [C, windows]
    d = (evidence.upstream.double() * slope).reshape(cout, -1)  # [C, windows]
    height, width = output_hw(inputs, block)
    patches = F.unfold(inputs.double()[None], block.kernel, padding=block.padding, stride=block.stride)[0]  # [K, L]
    z = w.reshape(cout, -1) @ patches + b[:, None]  # [C, L]
    gradient = g.reshape(cout, -1)
    kept = (gradient != 0).to(gradient)  # entries a defense zeroed are left out, as in solve_at
    forward_scale = 1 / max(float(((seen_z - b[:, None]) ** 2).sum()), 1e-300)
    gradient_scale = 1 / max(float((gradient**2).sum()), 1e-300)
    s = switches.reshape(cout, -1).clone()  # [C, windows], flat positions
    residual = kept * (gradient - torch.einsum("cw,kcw->ck", d, patches[:, s]))  # [C, K]
    moved = 0
    for window, candidates in enumerate(window_positions(height, width, block.pool)):
        current = s[:, window]
        here = patches[:, current].T  # [C, K]
        step = d[:, window, None, None] * (here[:, :, None] - patches[None, :, candidates])  # [C, K, k²]
        misfit = gradient_scale * ((residual[:, :, None] + kept[:, :, None] * step) ** 2).sum(1)  # [C, k²]
        zc = z[:, candidates]  # [C, k²]
        target = seen_z[:, window, None]
        excess = torch.relu(zc - target) ** 2
        score = misfit + forward_scale * ((zc - target) ** 2 + excess.sum(1, keepdim=True) - excess)
        new = candidates[score.argmin(1)]
        change = new != current
        if bool(change.any()):
            moved += int(change.sum())
            residual = residual + kept * d[:, window, None] * (here - patches[:, new].T) * change[:, None]
            s[:, window] = torch.where(change, new, current)
    return s.reshape(switches.shape), moved


def search_switches(
    evidence: BlockEvidence, estimate: torch.Tensor, rounds: int = ROUNDS, iterations: int = 3000
) -> SwitchSearch:
    """The block's input from its evidence, starting from ``estimate`` (its input's shape) and its
    switches, alternating least squares with the switch search until no switch moves or ``rounds``."""
    block = evidence.block
    w, b = evidence.weight.double(), evidence.bias.double()
    switches = pool_switches(block, w, b, estimate.double())
    solution = solve_at(evidence, estimate, switches, iterations)
    moved: list[int] = []
    if switches is None:
        return SwitchSearch(solution, None, moved)
    for _ in range(rounds):
        switches, changed = choose_switches(evidence, solution.inputs, switches)
        moved.append(changed)
        if not changed:
            break
        solution = solve_at(evidence, solution.inputs, switches, iterations)
    return SwitchSearch(solution, switches, moved)
