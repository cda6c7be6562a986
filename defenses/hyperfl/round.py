"""One HyperFL round as pure functions (the victim's and, differentiably, the attacker's), and the factored
hypernetwork update the attacker's simulator uses after a local round."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import torch

from bench.functional import loss_gradient, sgd_update
from bench.threat import Tensors

from bench.defenses.hyperfl.model import EMBEDDING, HEAD_BIAS, HEAD_WEIGHT, HyperFLModel, HyperNetwork


@dataclass(frozen=True)
class HyperFLProtocol:
    """The local round the server fixes (public knowledge)."""

    head_epochs: int
    head_lr: float
    local_epochs: int
    lr: float
    momentum: float
    weight_decay: float
    max_grad_norm: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _sgd_step(
    params: Tensors,
    grads: Tensors,
    velocity: Tensors | None,
    lr: float,
    momentum: float,
    weight_decay: float,
    inplace: bool,
) -> tuple[Tensors, Tensors]:
    """One step of torch.optim.SGD: :func:`bench.functional.sgd_update`, or with ``inplace`` (the victim,
    which owns ``params`` and ``grads``) the same arithmetic without a new buffer per operation: with a
    13.7 M-parameter hypernetwork the step is memory-bound (15 vs 90 ms on one core)."""
    if inplace:
        for k, p in params.items():
            d = grads[k]
            if weight_decay:
                d.add_(p, alpha=weight_decay)
            if momentum and velocity is not None:
                d.add_(velocity[k], alpha=momentum)
            p.add_(d, alpha=-lr)
        return params, grads
    new, velocity = sgd_update(params, grads, velocity, lr, momentum, weight_decay)
    return new, velocity if velocity is not None else grads


def _clip(grads: Tensors, keys: Iterable[str], max_norm: float, inplace: bool) -> Tensors:
    """torch.nn.utils.clip_grad_norm_ on the group ``keys`` (total 2-norm, eps 1e-6), without branching,
    so it stays differentiable and works under vmap."""
    keys = list(keys)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[k]) for k in keys]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if inplace:
        for k in keys:
            grads[k].mul_(coef)
        return grads
    return {**grads, **{k: grads[k] * coef for k in keys}}


def local_round(
    model: HyperFLModel,
    hyper: Tensors,
    private: Tensors,
    head_batches: Batches,
    hyper_batches: Batches,
    p: HyperFLProtocol,
    create_graph: bool,
) -> tuple[Tensors, Tensors]:
    """One HyperFL round as pure functions: head phase, then hypernetwork + embedding phase.

    ``hyper`` holds the hypernetwork's parameters (``hypernetwork.*`` names), ``private`` the
    embedding and head. Returns the new (hyper, private). The victim runs it without ``create_graph``
    (updating copies in place); with it the whole round stays differentiable in the data and in
    ``private`` (the explicit unrolled reference that ``factored_round_update``, the attacker's
    simulator, is tested and timed against).
    """
    inplace = not create_graph
    if inplace:  # the victim updates its own copies
        hyper = {k: v.detach().clone() for k, v in hyper.items()}
        private = {k: v.detach().clone() for k, v in private.items()}
    head = {HEAD_WEIGHT: private[HEAD_WEIGHT], HEAD_BIAS: private[HEAD_BIAS]}
    fixed = {**hyper, EMBEDDING: private[EMBEDDING]}
    velocity = None
    for xb, yb in head_batches:
        grads = loss_gradient(model, head, xb, yb, fixed, create_graph=create_graph)
        head, velocity = _sgd_step(head, grads, velocity, p.head_lr, p.momentum, p.weight_decay, inplace)
    trainable = {**hyper, EMBEDDING: private[EMBEDDING]}
    velocity = None
    for xb, yb in hyper_batches:
        grads = loss_gradient(model, trainable, xb, yb, head, create_graph=create_graph)
        grads = _clip(grads, hyper.keys(), p.max_grad_norm, inplace)
        grads = _clip(grads, [EMBEDDING], p.max_grad_norm, inplace)
        trainable, velocity = _sgd_step(trainable, grads, velocity, p.lr, p.momentum, p.weight_decay, inplace)
    new_hyper = {k: trainable[k] for k in hyper}
    return new_hyper, {EMBEDDING: trainable[EMBEDDING], **head}


def hyper_gradient(
    model: HyperFLModel, hyper: Tensors, private: Tensors, x: torch.Tensor, y: torch.Tensor, create_graph: bool
) -> Tensors:
    """FedSGD: the gradient of the batch loss with respect to the hypernetwork only."""
    return loss_gradient(model, hyper, x, y, private, create_graph=create_graph)


@dataclass(frozen=True)
class StackedHeads:
    """All generator heads as one Linear(hidden → every generated value): row blocks are the tensors."""

    weight: torch.Tensor  # [N, hidden]
    bias: torch.Tensor  # [N]
    shapes: Mapping[str, torch.Size]

    @classmethod
    def of(cls, server: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> StackedHeads:
        keys = [HyperNetwork.head_keys(n) for n in shapes]
        return cls(
            torch.cat([server[w] for w, _ in keys]).detach(),
            torch.cat([server[b] for _, b in keys]).detach(),
            dict(shapes),
        )

    def split(self, flat: torch.Tensor) -> Tensors:
        """Row blocks of ``flat`` ([N] or [N, hidden]) by generated tensor."""
        out, start = {}, 0
        for name, shape in self.shapes.items():
            n = shape.numel()
            out[name] = flat[start : start + n]
            start += n
        return out


def factored_round_update(
    model: HyperFLModel,
    server: Mapping[str, torch.Tensor],
    heads: StackedHeads,
    private: Tensors,
    head_batches: Batches,
    hyper_batches: Batches,
    p: HyperFLProtocol,
) -> Tensors:
    """The hypernetwork update of :func:`local_round`, computed without materialising each step.

    Every step changes the stacked generator heads (W, b) by a multiple of themselves (weight decay)
    plus rank-one terms g_s h_sᵀ (g_s: the generated values' gradient at step s, h_s: the hidden
    features), momentum and clipping only rescaling those terms. So W_t = a_t·W_0 + Σ_s β_ts g_s h_sᵀ
    and b_t = a_t·b_0 + Σ_s β_ts g_s with scalar a_t and β_ts, and each step needs only products with
    W_0 instead of updating all 13.7 M parameters: the same arithmetic as the victim's round up to
    float rounding (checked by the tests), several times cheaper to differentiate through.
    """
    target = model.target
    target.eval()
    w0, b0 = heads.weight, heads.bias
    a_mlp, c_mlp, emb = server[HyperNetwork.FIRST_WEIGHT], server[HyperNetwork.FIRST_BIAS], private[EMBEDDING]
    head = {HEAD_WEIGHT: private[HEAD_WEIGHT], HEAD_BIAS: private[HEAD_BIAS]}
    generated = heads.split(w0 @ torch.relu(a_mlp @ emb + c_mlp) + b0)
    generated = {n: v.view(heads.shapes[n]) for n, v in generated.items()}
    velocity = None
    for xb, yb in head_batches:
        grads = loss_gradient(target, model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS]), xb, yb, generated)
        grads = {HEAD_WEIGHT: grads[f"{model.classifier}.weight"], HEAD_BIAS: grads[f"{model.classifier}.bias"]}
        head, velocity = _sgd_step(head, grads, velocity, p.head_lr, p.momentum, p.weight_decay, False)
    head_params = model.head_params(head[HEAD_WEIGHT], head[HEAD_BIAS])
    small = {"A": a_mlp, "c": c_mlp, EMBEDDING: emb}
    small_velocity = None
    scale, scale_velocity = 1.0, 0.0  # a_t and its momentum buffer
    beta: list[torch.Tensor] = []  # β_ts for s < t
    gamma: list[torch.Tensor] = []  # their momentum buffers
    gs: list[torch.Tensor] = []
    hs: list[torch.Tensor] = []
    for t, (xb, yb) in enumerate(hyper_batches):
        pre = small["A"] @ small[EMBEDDING] + small["c"]
        h = torch.relu(pre)
        flat = scale * (w0 @ h + b0)
        if gs:
            g_mat, h_mat, b_vec = torch.stack(gs, 1), torch.stack(hs, 1), torch.stack(beta)
            flat = flat + g_mat @ (b_vec * (h_mat.T @ h + 1))
        phi = {n: v.view(heads.shapes[n]) for n, v in heads.split(flat).items()}
        grads = loss_gradient(target, phi, xb, yb, head_params, create_graph=True)
        g = torch.cat([grads[n].reshape(-1) for n in heads.shapes])
        dh = scale * (w0.T @ g)
        if gs:
            dh = dh + h_mat @ (b_vec * (g_mat.T @ g))
        delta = dh * (pre > 0).to(dh.dtype)
        d_small = {"A": torch.outer(delta, small[EMBEDDING]), "c": delta, EMBEDDING: small["A"].T @ delta}
        norm = torch.sqrt(g.dot(g) * (h.dot(h) + 1) + (d_small["A"] ** 2).sum() + delta.dot(delta))
        coef = torch.clamp(p.max_grad_norm / (norm + 1e-6), max=1.0)
        d_small["A"], d_small["c"] = d_small["A"] * coef, d_small["c"] * coef
        d_small = _clip(d_small, [EMBEDDING], p.max_grad_norm, False)
        small, small_velocity = _sgd_step(small, d_small, small_velocity, p.lr, p.momentum, p.weight_decay, False)
        # the stacked heads, in coefficients: the step is wd·W_t + coef·g_t h_tᵀ
        d_scale = p.weight_decay * scale
        d_beta = [p.weight_decay * b for b in beta] + [coef]
        if t and p.momentum:
            scale_velocity = p.momentum * scale_velocity + d_scale
            gamma = [p.momentum * v + d for v, d in zip(gamma + [torch.zeros_like(coef)], d_beta)]
        else:
            scale_velocity, gamma = d_scale, d_beta
        scale = scale - p.lr * scale_velocity
        beta = [b - p.lr * v for b, v in zip(beta + [torch.zeros_like(coef)], gamma)]
        gs.append(g)
        hs.append(h)
    update = {HyperNetwork.FIRST_WEIGHT: small["A"] - a_mlp, HyperNetwork.FIRST_BIAS: small["c"] - c_mlp}
    if gs:
        g_mat, h_mat, b_vec = torch.stack(gs, 1), torch.stack(hs, 1), torch.stack(beta)
        d_weight = (scale - 1) * w0 + (g_mat * b_vec) @ h_mat.T
        d_bias = (scale - 1) * b0 + g_mat @ b_vec
    else:
        d_weight, d_bias = torch.zeros_like(w0), torch.zeros_like(b0)
    for name, block in heads.split(d_weight).items():
        update[HyperNetwork.head_keys(name)[0]] = block
    for name, block in heads.split(d_bias).items():
        update[HyperNetwork.head_keys(name)[1]] = block
    return update
