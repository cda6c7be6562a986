"""Linear-layer leakage: what one observed linear layer with a bias gives away in closed form.

For ``y = W x + b`` on one example, ∂L/∂W = δ xᵀ and ∂L/∂b = δ with δ = ∂L/∂y, so the layer's input
is ``x = (∂L/∂W)ᵀ δ / ‖δ‖²`` exactly (Phong et al., "Privacy-preserving deep learning via additively
homomorphic encryption", IEEE TIFS 2018; Geiping et al., NeurIPS 2020, §3; the "linear layer
leakage" line of work, e.g. Fowl et al., ICLR 2022). And δ is the upstream gradient at the
layer's output, so the gradients of every layer *below* it can be replayed for a candidate image
as J(candidate)ᵀ Wᵀ δ, with no knowledge of the layers above (a private head) or of the label.

Everything here works from the :class:`~bench.threat.Observation` alone (``public.model``, the
observed tensors, ``observed_kind``, the protocol's weight decay): it never imports a defense.
The formulas are exact for a FedSGD gradient of one example; for what else a defense may send
they are estimates, and :func:`read_layer` says which (an update after several local steps, an
aggregate over clients, noise, entries zeroed by pruning: the ratio then mixes, blurs or skips).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from bench.sgd_defense import GRADIENT_DECAY
from bench.threat import Observation, Tensors


class _Captured(Exception):
    """Raised by the forward pre-hook once the layer's input is captured: nothing above it runs."""


class ModuleKeys:
    """The observed keys of a module's weight and bias, from its ``name``."""

    name: str

    @property
    def weight_key(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_key(self) -> str:
        return f"{self.name}.bias"


@dataclass(frozen=True)
class LeakyLayer(ModuleKeys):
    """An observed linear layer with a bias, in forward order (0 = nearest the input)."""

    name: str
    order: int
    in_features: int
    out_features: int


def leaky_layers(obs: Observation) -> list[LeakyLayer]:
    """The model's ``nn.Linear`` layers with a bias whose weight and bias the server observes (with the
    parameters' shapes), ordered by when the forward pass reaches them."""
    model = obs.public.model
    candidates = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.bias is None:
            continue
        w, b = obs.observed.get(f"{name}.weight"), obs.observed.get(f"{name}.bias")
        if w is not None and b is not None and w.shape == module.weight.shape and b.shape == module.bias.shape:
            candidates[name] = module
    if not candidates:
        return []
    reached: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: reached.append(n)) for n, m in candidates.items()]
    try:
        with torch.no_grad():
            device = next(iter(obs.observed.values())).device
            model(torch.zeros((1, *obs.public.image_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    order = list(dict.fromkeys(reached))
    return [
        LeakyLayer(n, order.index(n), candidates[n].in_features, candidates[n].out_features)
        for n in sorted(candidates, key=lambda n: order.index(n) if n in order else len(order))
    ]


def as_gradient(obs: Observation, key: str) -> torch.Tensor:
    """The observed tensor ``key`` read as a gradient of the loss: an update (new − old ≈ −lr·Σ gradients)
    is sign-flipped (the scale cancels in every ratio below); a gradient the protocol says was sent with
    weight decay (``protocol["weight_decay_in_gradient"]``) has the public ``wd · θ`` removed (θ: the
    parameters the server sent)."""
    tensor = obs.observed[key].detach()
    if obs.public.observed_kind == "update":
        return -tensor
    decay = float(obs.public.protocol.get(GRADIENT_DECAY) or 0.0)
    if decay:
        params = dict(obs.public.model.named_parameters())
        if key in params:
            tensor = tensor - decay * params[key].detach().to(tensor)
    return tensor


@dataclass
class LayerReading:
    """What one leaky layer gives away: its input (one example) and the upstream gradient δ at its output."""

    layer: LeakyLayer
    features: torch.Tensor  # [in_features], the layer's input
    delta: torch.Tensor  # [out_features], ∂L/∂(layer output)
    known: torch.Tensor  # [in_features] bool: input features the observation determines
    exact: bool  # True: the formula is exact for this observation
    why_not_exact: list[str] = field(default_factory=list)


def read_layer(obs: Observation, layer: LeakyLayer) -> LayerReading:
    """x_j = Σ_i dW_ij δ_i / Σ_i δ_i² over the rows i where both dW_ij and δ_i are observed (non-zero).

    With nothing zeroed this is x = dWᵀδ / ‖δ‖². Entries a defense zeroed (pruning, Soteria's columns)
    are left out of both sums instead of being read as zero; a feature whose column is entirely zero
    is unknown (``known`` False, value 0).
    """
    dw = as_gradient(obs, layer.weight_key).double()
    db = as_gradient(obs, layer.bias_key).double()
    mask = (dw != 0) & (db != 0)[:, None]
    numerator = (dw * db[:, None] * mask).sum(0)
    denominator = ((db**2)[:, None] * mask).sum(0)
    known = denominator > 0
    features = torch.where(known, numerator / denominator.clamp_min(1e-300), torch.zeros_like(numerator))
    why = []
    if obs.public.num_images != 1:
        why.append(
            f"the observation mixes {obs.public.num_images} examples (the ratio is a weighted mix of their inputs)"
        )
    if obs.public.observed_kind == "update":
        why.append("an update after local steps (the ratio mixes the steps' inputs and upstream gradients)")
    if not obs.exact:
        why.append("the observation is not exactly replayable (noise, or a mechanism the attacker does not replay)")
    if not bool(known.all()):
        why.append(f"{int((~known).sum())} of {layer.in_features} input features are zeroed in every row")
    elif bool((dw == 0).any()):
        why.append("some entries are zeroed (left out of the ratio)")
    dtype = obs.observed[layer.bias_key].dtype
    return LayerReading(layer, features.to(dtype), db.to(dtype), known, not why, why)


def layer_input(model: nn.Module, layer: str, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The input of ``layer`` (flattened per example) when ``model`` runs on ``x`` with ``params``;
    the forward pass stops there (nothing above the layer is computed)."""
    seen: list[torch.Tensor] = []

    def capture(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(inputs[0])
        raise _Captured

    handle = model.get_submodule(layer).register_forward_pre_hook(capture)
    try:
        functional_call(model, dict(params), (x,), strict=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"the forward pass never reached layer {layer!r}")
    return seen[0].flatten(1)


def lower_keys(obs: Observation, layer: str) -> list[str]:
    """The observed parameters that feed the input of module ``layer`` (the layers below it), in the model's order."""
    model = obs.public.model
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    keys = [
        k
        for k in params
        if k in obs.observed and obs.observed[k].shape == params[k].shape and not k.startswith(layer + ".")
    ]
    if not keys:
        return []
    device = next(iter(obs.observed.values())).device
    with torch.enable_grad():
        probe = torch.randn((1, *obs.public.image_shape), generator=torch.Generator().manual_seed(0)).to(device)
        out = layer_input(model, layer, params, probe).sum()
        if not out.requires_grad:  # the layer's input is the image: no parameter feeds it
            return []
        grads = torch.autograd.grad(out, [params[k] for k in keys], allow_unused=True)
    return [k for k, g in zip(keys, grads) if g is not None]


def replay_function(
    obs: Observation, layer: str, keys: list[str]
) -> Callable[[Tensors, torch.Tensor, torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
    """f(params, x, u) → (the input of module ``layer`` for one image x [C, H, W], the gradients of the ``keys``
    parameters of the loss whose upstream gradient at that input is ``u``): the head-free replay
    J_θ(x)ᵀ u of the layers below. Pure (``torch.func``), so it runs under ``vmap`` over targets."""
    model = obs.public.model
    names = list(keys)

    def replay(params: Tensors, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lower = {k: params[k] for k in names}
        rest = {k: v for k, v in params.items() if k not in lower}

        def feats(low: Tensors) -> torch.Tensor:
            return layer_input(model, layer, {**rest, **low}, x[None])[0]

        if not names:  # nothing observed below (the layer's input is the image): features only
            return feats({}), []
        features, pullback = torch.func.vjp(feats, lower)[:2]
        (grads,) = pullback(u)
        return features, [grads[k] for k in names]

    return replay
