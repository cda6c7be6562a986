"""The client's local computation written once, as pure functions of parameters and data.

Defenses use these both for the real client step and for the attacker's simulator, so the
victim and the simulator run *exactly* the same math (the Inverting Gradients code once had the
victim on 0.5·CE and the attack on CE; sharing the function rules that out).

Inside a ``torch.func`` transform (an attack batching restarts with ``vmap``) gradients are taken
with ``torch.func.grad``; otherwise with ``torch.autograd.grad``, which is what a hand-written
gradient-inversion loop uses and is measurably cheaper on small networks.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.threat import Tensors


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for integer labels, or for label probabilities (soft labels, DLG)."""
    if y.is_floating_point():
        return -(y * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits, y)


def inside_functorch_transform() -> bool:
    """True while running under ``torch.func.vmap``/``grad``, where ``autograd.grad`` is unavailable."""
    return torch._C._functorch.peek_interpreter_stack() is not None


_TIED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def has_tied_tensors(model: nn.Module) -> bool:
    """Whether ``model`` shares a parameter or buffer under two names (cached per module)."""
    if model not in _TIED:
        named: list[torch.Tensor] = [t for _, t in model.named_parameters(remove_duplicate=False)]
        named += [t for _, t in model.named_buffers(remove_duplicate=False)]
        _TIED[model] = len({id(t) for t in named}) != len(named)
    return _TIED[model]


def _are_own(tensors: Mapping[str, torch.Tensor], own: Iterable[torch.Tensor]) -> bool:
    own = list(own)
    return len(tensors) == len(own) and all(a is b for a, b in zip(tensors.values(), own))


def forward(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` with the given parameters (and buffers) instead of its own.

    When they *are* the module's own tensors (an attacker's simulator holding the server's state in
    a private copy of the network) the module is called directly: swapping tensors in and out costs
    a measurable share of an attack step on a small network. Weight tying is honoured only for models
    that tie tensors (finding ties walks every module on each call).
    """
    if _are_own(params, model.parameters()) and (not buffers or _are_own(buffers, model.buffers())):
        return model(x)
    tensors = dict(params) if not buffers else {**buffers, **params}
    return functional_call(model, tensors, (x,), strict=False, tie_weights=has_tied_tensors(model))


def loss_gradient(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None = None,
    create_graph: bool = True,
) -> Tensors:
    """Gradient of the mean cross-entropy on (x, y) with respect to ``params``.

    With ``create_graph`` the result stays differentiable with respect to ``x``, ``y`` and
    ``params`` (what a gradient-matching attack needs); without it, it is a plain client gradient.
    """
    if inside_functorch_transform():

        def loss_of(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return cross_entropy(forward(model, p, x, buffers), y)

        return dict(torch.func.grad(loss_of)(dict(params)))
    leaves = {k: (v if v.requires_grad else v.detach().requires_grad_(True)) for k, v in params.items()}
    with torch.enable_grad():
        loss = cross_entropy(forward(model, leaves, x, buffers), y)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph)
    return dict(zip(leaves.keys(), grads))


#: gradient(model, params, x, y, buffers, create_graph) -> gradients by name. ``loss_gradient`` is the plain
#: one; a defense that changes how a client's step gradient is formed (DP-SGD's per-example clipping and
#: noise) passes its own to :func:`sgd_steps` and keeps the rest of the local computation.
GradientFn = Callable[..., Tensors]


def per_example_gradients(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None = None,
    create_graph: bool = True,
) -> Tensors:
    """Each example's loss gradient, stacked: tensors of shape [B, *param.shape].

    ``torch.func.vmap`` over ``torch.func.grad`` of the one-example loss (no Python loop over
    examples). The result stays differentiable with respect to ``x``, ``y`` and ``params`` under
    ordinary autograd and composes with an outer ``vmap``, so attack simulators can use it. Only
    meaningful for models without batch statistics (no BatchNorm in train mode), as in Opacus.
    A batch of one takes :func:`loss_gradient` (cheaper, and bit-identical to the plain gradient),
    which keeps the graph only with ``create_graph`` (the vmapped path is differentiable regardless).
    """
    if x.shape[0] == 1:
        return {k: g.unsqueeze(0) for k, g in loss_gradient(model, params, x, y, buffers, create_graph).items()}
    params = dict(params)  # under vmap, loss_gradient takes its torch.func.grad path
    return dict(torch.func.vmap(lambda xi, yi: loss_gradient(model, params, xi[None], yi[None], buffers))(x, y))


def sgd_update(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    velocity: Tensors | None,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[Tensors, Tensors | None]:
    """One step of ``torch.optim.SGD`` as a pure function: weight decay added to the gradient, then the
    momentum buffer (the first step's buffer is the gradient itself). Returns (new params, buffer)."""
    if weight_decay:
        grads = {k: g + weight_decay * params[k] for k, g in grads.items()}
    if momentum:
        velocity = dict(grads) if velocity is None else {k: momentum * velocity[k] + grads[k] for k in grads}
        step: Mapping[str, torch.Tensor] = velocity
    else:
        step = grads
    return {k: params[k] - lr * step[k] for k in params}, velocity


def sgd_steps(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    buffers: Mapping[str, torch.Tensor] | None = None,
    create_graph: bool = True,
    gradient: GradientFn = loss_gradient,
) -> Tensors:
    """Local SGD (PyTorch's convention for momentum and weight decay) over ``batches``.

    Returns the final parameters. With ``create_graph`` the whole unrolled trajectory is
    differentiable, which is how an attacker simulates a multi-step FedAvg update. ``gradient``
    forms each step's gradient (default: the plain mini-batch loss gradient).
    """
    current = dict(params)
    velocity: Tensors | None = None
    for xb, yb in batches:
        grads = gradient(model, current, xb, yb, buffers, create_graph=create_graph)
        current, velocity = sgd_update(current, grads, velocity, lr, momentum, weight_decay)
        if not create_graph:
            current = {k: v.detach() for k, v in current.items()}
            velocity = None if velocity is None else {k: v.detach() for k, v in velocity.items()}
    return current
