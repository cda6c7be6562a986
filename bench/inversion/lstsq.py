"""Matrix-free linear least squares: CGLS (conjugate gradients on the normal equations), the adjoint by autograd.

The closed-form block solvers (:mod:`bench.inversion.recursive`, :mod:`bench.inversion.switches`) pose
systems of a few thousand unknowns whose operator is a convolution; CGLS needs only the operator and
its adjoint, which autograd gives, so no matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_k ⟨a_k, b_k⟩ over lists of tensors."""
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def cgls(
    apply: Callable[[torch.Tensor], list[torch.Tensor]],
    target: Sequence[torch.Tensor],
    start: torch.Tensor,
    iterations: int,
    tol: float = 1e-24,
) -> torch.Tensor:
    """argmin_v Σ‖A_k(v) − t_k‖² for a linear ``apply(v) → [A_k(v)]``, by CGLS from ``start``; Aᵀ by autograd.

    Stops once ‖Aᵀr‖² ≤ tol · ‖Aᵀt‖² (rounding level: a warm start at the solution must not wander
    off in the noise) and returns the iterate with the smallest residual seen."""

    def adjoint(r: Sequence[torch.Tensor]) -> torch.Tensor:
        v = torch.zeros_like(start, requires_grad=True)
        with torch.enable_grad():
            out = apply(v)
            return torch.autograd.grad(dot(out, r), v)[0]

    scale = float((adjoint(target) ** 2).sum())
    x = start.clone()
    with torch.no_grad():
        r = [t - a for t, a in zip(target, apply(x))]
    best, best_rr = x, float(dot(r, r))
    s = adjoint(r)
    p, gamma = s.clone(), (s * s).sum()
    for _ in range(iterations):
        if float(gamma) <= tol * scale:
            break
        with torch.no_grad():
            q = apply(p)
            qq = dot(q, q)
            if not bool(qq > 0) or not bool(torch.isfinite(qq)):
                break
            alpha = gamma / qq
            x = x + alpha * p
            r = [ri - alpha * qi for ri, qi in zip(r, q)]
            rr = float(dot(r, r))
            if rr < best_rr:
                best, best_rr = x, rr
        s = adjoint(r)
        new = (s * s).sum()
        p, gamma = s + (new / gamma) * p, new
    return best
