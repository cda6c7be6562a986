"""Recursive closed-form inversion of the convolutions below a leaky linear layer (R-GAP, generalised).

R-GAP (Zhu & Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021, §3): for a layer
``z = W ⊛ v + b`` and one example, the weight gradient is ``∂L/∂W = Δ Pᵀ`` (P: the patches of the
input v, Δ = ∂L/∂z), which is linear in v once Δ is known; the forward pass ``W ⊛ v + b = z`` is
linear in v once z is known. Going down from a layer whose output and upstream gradient are known,
each convolution's input is the least-squares solution of both constraints together (R-GAP's
``[K; W] x = [g; out]``, padding handled by solving for the unpadded input), and the upstream
gradient of the layer below is ``Wᵀ Δ``. An invertible activation (leaky ReLU, sigmoid, tanh,
identity) gives z from its output and act′(z) for Δ. Here the recursion starts at the leaky linear
layer of :mod:`bench.inversion.linear`, whose input (the top block's output) and upstream gradient
``Wᵀδ`` are read off the gradient exactly.

One generalisation, not in R-GAP (whose networks have no pooling): after a k×k max-pool only one
entry per window is seen, and which one (the *switch*) is unknown. The switches are taken from the
current estimate of the block's input, and refreshed from each solution (``switch_rounds``); the
estimate comes from an image (e.g. the gradient-matching result of :mod:`attacks.analytic`). With
the right switches the system is the same as R-GAP's restricted to the seen rows; with wrong ones
it is inconsistent, and the caller should keep whichever image matches the observation better.
Gradient entries a defense zeroed (pruning, Soteria) are left out of the equations, as in
:func:`bench.inversion.linear.read_layer`.

Each least-squares problem is solved matrix-free by CGLS (conjugate gradients on the normal
equations) in float64, warm-started from the estimate; the two blocks of equations are scaled by
their targets' norms so neither dominates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from bench.inversion.linear import ModuleKeys
from bench.inversion.lstsq import cgls, dot
from bench.threat import Observation, Tensors

ACTIVATIONS = ("identity", "leaky_relu", "sigmoid", "tanh")


@dataclass(frozen=True)
class ConvBlock(ModuleKeys):
    """One ``Conv2d`` of the chain below the leaky layer, with the activation and max-pool after it."""

    name: str  # the Conv2d module's name (its parameters: name.weight, name.bias)
    kernel: int
    stride: int
    padding: int
    activation: str  # one of ACTIVATIONS
    slope: float  # leaky ReLU's negative slope
    pool: int  # max-pool window (= its stride); 1: no pooling


def _activation(node: fx.Node, modules: Mapping[str, nn.Module]) -> tuple[str, float] | None:
    """(kind, slope) when ``node`` is an invertible elementwise activation, else None."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.LeakyReLU):
            return "leaky_relu", float(module.negative_slope)
        if isinstance(module, nn.Sigmoid):
            return "sigmoid", 0.0
        if isinstance(module, nn.Tanh):
            return "tanh", 0.0
        if isinstance(module, nn.Identity):
            return "identity", 0.0
    if node.op == "call_function":
        if node.target is F.leaky_relu:
            slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
            return "leaky_relu", float(slope)  # type: ignore[arg-type]
        if node.target in (torch.sigmoid, F.sigmoid):
            return "sigmoid", 0.0
        if node.target in (torch.tanh, F.tanh):
            return "tanh", 0.0
    if node.op == "call_method" and node.target in ("sigmoid", "tanh"):
        return str(node.target), 0.0
    return None


def _pool(node: fx.Node, modules: Mapping[str, nn.Module]) -> int | None:
    """The window of a non-overlapping, unpadded square max-pool node, else None."""
    kernel: Any
    stride: Any
    padding: Any
    dilation: Any
    if node.op == "call_module" and isinstance(modules[str(node.target)], nn.MaxPool2d):
        m = modules[str(node.target)]
        kernel, stride, padding, dilation = m.kernel_size, m.stride, m.padding, m.dilation
    elif node.op == "call_function" and node.target is F.max_pool2d:
        kernel = node.kwargs.get("kernel_size", node.args[1] if len(node.args) > 1 else None)
        stride = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else None)
        padding = node.kwargs.get("padding", 0)
        dilation = node.kwargs.get("dilation", 1)
        if node.kwargs.get("ceil_mode") or node.kwargs.get("return_indices"):
            return None
    else:
        return None
    stride = stride or kernel
    if isinstance(kernel, int) and stride == kernel and padding == 0 and dilation == 1:
        return kernel
    return None


def _is_flatten(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in ("flatten", "view", "reshape")) or (
        node.op == "call_function" and node.target is torch.flatten
    )


def conv_chain(model: nn.Module, layer: str) -> list[ConvBlock] | str:
    """The chain input → [Conv2d → activation → max-pool?]* → flatten → ``layer`` of ``model``, or why
    R-GAP's recursion does not apply (another operation, a non-invertible activation, a branch)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: not a plain chain
        return f"the model is not traceable as a plain chain ({type(exc).__name__})"
    modules = dict(model.named_modules())
    nodes = [n for n in graph.nodes if n.op != "placeholder"]
    blocks: list[ConvBlock] = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if node.op == "call_module" and str(node.target) == layer:
            return blocks
        if _is_flatten(node):
            i += 1
            continue
        if not (node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.Conv2d)):
            return (
                f"{node.name} ({node.op} {node.target}) below {layer} is not a Conv2d, activation, max-pool or flatten"
            )
        conv = modules[str(node.target)]
        assert isinstance(conv, nn.Conv2d)
        square = conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
        if not square or conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is None:
            return f"{node.target} is not a square, ungrouped, undilated convolution with a bias"
        if not isinstance(conv.padding, tuple) or conv.padding[0] != conv.padding[1]:
            return f"{node.target} has unequal or named padding"
        act = _activation(nodes[i + 1], modules) if i + 1 < len(nodes) else None
        if act is None:
            return f"{node.target} is not followed by an invertible activation ({', '.join(ACTIVATIONS)})"
        pool = _pool(nodes[i + 2], modules) if i + 2 < len(nodes) else None
        blocks.append(
            ConvBlock(
                str(node.target), conv.kernel_size[0], conv.stride[0], int(conv.padding[0]), act[0], act[1], pool or 1
            )
        )
        i += 3 if pool else 2
    return f"the forward pass never reaches {layer}"


def inverse_activation(block: ConvBlock, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, act′(z)) from the activation's output a."""
    if block.activation == "leaky_relu":
        positive = a > 0
        return torch.where(positive, a, a / block.slope), torch.where(positive, 1.0, block.slope).to(a)
    if block.activation == "sigmoid":
        a = a.clamp(1e-6, 1 - 1e-6)
        return torch.logit(a), a * (1 - a)
    if block.activation == "tanh":
        a = a.clamp(-1 + 1e-6, 1 - 1e-6)
        return torch.atanh(a), 1 - a * a
    return a, torch.ones_like(a)


@dataclass
class BlockSolution:
    """One block's recovered input, the upstream gradient at it, and how well the equations hold."""

    inputs: torch.Tensor  # [C, H, W]
    upstream: torch.Tensor  # ∂L/∂(inputs)
    residual: float  # relative residual of the scaled system at the solution


@dataclass(frozen=True)
class BlockEvidence:
    """What is known of one block: its parameters, its observed weight gradient, its output (after
    activation and pool) and the upstream gradient there. Both block solvers take it (:func:`solve_block`,
    :func:`bench.inversion.peel.peel_block`)."""

    block: ConvBlock
    weight: torch.Tensor
    bias: torch.Tensor
    gradient: torch.Tensor
    output: torch.Tensor
    upstream: torch.Tensor

    @classmethod
    def of(
        cls,
        block: ConvBlock,
        params: Mapping[str, torch.Tensor],
        gradient: torch.Tensor,
        output: torch.Tensor,
        upstream: torch.Tensor,
    ) -> BlockEvidence:
        return cls(block, params[block.weight_key], params[block.bias_key], gradient, output, upstream)


def solve_block(
    evidence: BlockEvidence, estimate: torch.Tensor, switch_rounds: int = 2, iterations: int = 3000
) -> BlockSolution:
    """The input of the block from its evidence; ``estimate`` (its input's shape) gives the starting
    point and the max-pool switches (refreshed from each solution, ``switch_rounds`` times)."""
    block = evidence.block
    w, b = evidence.weight.double(), evidence.bias.double()
    solution = BlockSolution(estimate.double().detach(), torch.zeros(0), float("nan"))
    for _ in range(max(1, switch_rounds if block.pool > 1 else 1)):
        switches = pool_switches(block, w, b, solution.inputs)
        solution = solve_at(evidence, solution.inputs, switches, iterations)
    return solution


def solve_at(
    evidence: BlockEvidence, start: torch.Tensor, switches: torch.Tensor | None, iterations: int = 3000
) -> BlockSolution:
    """The least-squares input of the block for the given max-pool ``switches`` (max_pool2d's indices; None
    without a pool), by CGLS from ``start``: the forward pass at the switches and the weight gradient, each
    scaled by its target's norm."""
    block = evidence.block
    w, b, g = evidence.weight.double(), evidence.bias.double(), evidence.gradient.double()
    out, up, v = evidence.output.double(), evidence.upstream.double(), start.double().detach()
    cout, kk = w.shape[0], block.kernel
    wm = w.reshape(cout, -1)
    z_seen, slope = inverse_activation(block, out)
    d_seen = up * slope
    spatial = output_hw(v, block)
    if switches is not None:

        def place(t: torch.Tensor) -> torch.Tensor:
            return F.max_unpool2d(t[None], switches[None], (block.pool, block.pool), output_size=spatial)[0]

        mask, z_full, delta = place(torch.ones_like(out)), place(z_seen), place(d_seen)
    else:
        mask, z_full, delta = torch.ones_like(z_seen), z_seen, d_seen

    def patches(x: torch.Tensor) -> torch.Tensor:  # [C·k·k, L]
        return F.unfold(x[None], kk, padding=block.padding, stride=block.stride)[0]

    gradient_target = g.reshape(cout, -1)
    seen = (g != 0).reshape(cout, -1).to(g)  # entries a defense zeroed are left out, as in read_layer
    gw = seen / gradient_target.norm().clamp_min(1e-300)
    dm = delta.reshape(cout, -1)
    forward_target = mask.reshape(cout, -1) * (z_full.reshape(cout, -1) - b[:, None])
    fw = mask.reshape(cout, -1) / forward_target.norm().clamp_min(1e-300)  # seen rows, scaled

    def apply(x: torch.Tensor) -> list[torch.Tensor]:
        p = patches(x)
        return [fw * (wm @ p), gw * (dm @ p.T)]

    targets = [fw * forward_target, gw * gradient_target]
    v = cgls(apply, targets, v, iterations)
    with torch.no_grad():
        error = [a - t for a, t in zip(apply(v), targets)]
        residual = float((dot(error, error) / dot(targets, targets)).sqrt())
    x = v.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = (wm @ patches(x)).reshape(cout, *spatial)
        (up_in,) = torch.autograd.grad((z * delta).sum(), x)
    return BlockSolution(v.detach(), up_in.detach(), residual)


def output_hw(x: torch.Tensor, block: ConvBlock) -> tuple[int, int]:
    """The height and width of ``block``'s convolution output for input ``x`` (before its pool)."""
    h, w = x.shape[-2:]
    k, s, p = block.kernel, block.stride, block.padding
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1


def activate(block: ConvBlock, z: torch.Tensor) -> torch.Tensor:
    if block.activation == "leaky_relu":
        return F.leaky_relu(z, block.slope)
    if block.activation in ("sigmoid", "tanh"):
        return getattr(torch, block.activation)(z)
    return z


def block_output(block: ConvBlock, weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The block's output (convolution, activation, max-pool) for ``inputs`` [C, H, W]."""
    z = activate(block, F.conv2d(inputs[None], weight, bias, block.stride, block.padding))
    return (F.max_pool2d(z, block.pool) if block.pool > 1 else z)[0]


def pool_switches(
    block: ConvBlock, weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor
) -> torch.Tensor | None:
    """Which entry of each max-pool window survives when ``block`` runs on ``inputs`` [C, H, W] (max_pool2d's
    indices; the activations are monotone, so the pre-activation decides), or None without a pool."""
    if block.pool == 1:
        return None
    with torch.no_grad():
        z = F.conv2d(inputs[None].to(weight), weight, bias, block.stride, block.padding)
        return F.max_pool2d(z, block.pool, return_indices=True)[1][0]


def chain_states(
    blocks: Sequence[ConvBlock], params: Mapping[str, torch.Tensor], image: torch.Tensor
) -> list[torch.Tensor]:
    """Each block's input when the chain runs on ``image`` [C, H, W] (in float64), then the chain's output."""
    states = [image.detach().double()]
    with torch.no_grad():
        for block in blocks:
            states.append(
                block_output(block, params[block.weight_key].double(), params[block.bias_key].double(), states[-1])
            )
    return states


def invert_chain(
    blocks: Sequence[ConvBlock],
    params: Mapping[str, torch.Tensor],
    gradients: Mapping[str, torch.Tensor],
    features: torch.Tensor,
    upstream: torch.Tensor,
    estimate: torch.Tensor,
    switch_rounds: int = 2,
    iterations: int = 3000,
) -> tuple[torch.Tensor, list[float]]:
    """The image [C, H, W] that R-GAP's recursion recovers from the leaky layer's input ``features`` and
    upstream gradient (both flat), the blocks' observed weight gradients, and an image ``estimate`` (for
    the starting points and the switches). Returns it and each block's relative residual (top first)."""
    *guesses, last = chain_states(blocks, params, estimate)
    shape = last.shape
    output, up = features.double().reshape(shape), upstream.double().reshape(shape)
    residuals = []
    for block, guess in zip(reversed(blocks), reversed(guesses)):
        evidence = BlockEvidence.of(block, params, gradients[block.weight_key], output, up)
        solution = solve_block(evidence, guess, switch_rounds, iterations)
        residuals.append(solution.residual)
        output, up = solution.inputs, solution.upstream
    return output.to(estimate.dtype), residuals


def unobserved(obs: Observation, block: ConvBlock, state: Tensors) -> str | None:
    """Why the server does not see ``block``'s weight or bias gradient (with the parameters' shapes), or None."""
    for key in (block.weight_key, block.bias_key):
        if key not in obs.observed or obs.observed[key].shape != state[key].shape:
            return f"{key} is not observed"
    return None


def recursion_chain(
    obs: Observation, layer: str, state: Tensors, mode: str, chain: list[ConvBlock] | str
) -> list[ConvBlock] | str:
    """The blocks of ``chain`` (:func:`conv_chain` below ``layer``) that the recursion inverts (``mode``:
    'auto' only without max-pools, 'switches' also through them, 'off'), or why it does not run."""
    if mode == "off":
        return "off (recursion='off')"
    if isinstance(chain, str):
        return chain
    if not chain:
        return f"nothing below {layer}: its input is the image"
    if mode == "auto" and any(block.pool > 1 for block in chain):
        return "a max-pool lies below (its switches are unknown; recursion='switches' takes them from the estimate)"
    missing = [why for why in (unobserved(obs, block, state) for block in chain) if why]
    return missing[0] if missing else chain
