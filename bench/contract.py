"""The Observation and Reconstruction contracts as executable checks.

Written once and used twice: ``bench run`` calls :func:`validate_observation` and
:func:`validate_reconstruction` on every target (cheap: two simulator calls and one backward pass),
so a broken plug-in is refused in one line before it produces numbers; ``bench check-defense`` and
``check-attack`` call the same functions, one named check each, and add the slower checks. A broken
contract raises :class:`~bench.errors.PluginError` whose message says what is wrong.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence

import torch

from bench.attack import Reconstruction
from bench.errors import PluginError, first_line  # first_line: re-exported here too
from bench.inversion.objective import l2_distance
from bench.inversion.variables import image_init, label_logits_init, observation_device, unknown_variables
from bench.results import to_jsonable
from bench.threat import Observation, PublicKnowledge, Tensors, Unknown

OBSERVED_KINDS = ("gradient", "update")


def describe(t: torch.Tensor) -> str:
    """``[2, 3] float32`` (plus the device when it is not the CPU), for messages."""
    where = "" if t.device.type == "cpu" else f" on {t.device}"
    return f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}{where}"


def require_jsonable(value: object, what: str) -> None:
    """Values recorded in result rows must turn into plain JSON."""
    try:
        json.dumps(to_jsonable(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{what} cannot be recorded as JSON ({first_line(exc)})") from None


def tensor_dict(value: object, what: str, *, floating: bool = True, allow_empty: bool = False) -> Tensors:
    """Check that ``value`` maps names to (floating, finite) tensors."""
    if not isinstance(value, Mapping):
        raise PluginError(f"{what} is a {type(value).__name__}, not a dict of tensors")
    if not value and not allow_empty:
        raise PluginError(f"{what} is empty")
    for key, t in value.items():
        if not isinstance(key, str):
            raise PluginError(f"{what} has a non-string key {key!r}")
        if not isinstance(t, torch.Tensor):
            raise PluginError(f"{what}[{key!r}] is a {type(t).__name__}, not a tensor")
        if floating and not t.is_floating_point():
            raise PluginError(f"{what}[{key!r}] has dtype {t.dtype}, expected a floating-point tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PluginError(f"{what}[{key!r}] has non-finite values")
    return dict(value)


def check_observation(obs: object, num_images: int, image_shape: Sequence[int], num_classes: int) -> Observation:
    """The structure of what ``observe`` returned for a target of ``num_images`` images: types, public
    facts, unknowns, recordable metadata."""
    if not isinstance(obs, Observation):
        raise PluginError(f"observe() returned a {type(obs).__name__}, not a bench.Observation")
    observed = tensor_dict(obs.observed, "observed")
    for key, t in observed.items():
        if t.requires_grad:
            raise PluginError(f"observed[{key!r}] requires grad: detach what the server receives")
    public = obs.public
    if not isinstance(public, PublicKnowledge):
        raise PluginError(f"Observation.public is a {type(public).__name__}, not a bench.PublicKnowledge")
    # An aggregate over several clients may ask the attacker for more images than the target holds.
    if (
        isinstance(public.num_images, bool)
        or not isinstance(public.num_images, numbers.Integral)
        or public.num_images < num_images
    ):
        raise PluginError(f"public.num_images is {public.num_images!r}, but the target batch has {num_images} images")
    if tuple(public.image_shape) != tuple(image_shape):
        raise PluginError(f"public.image_shape is {tuple(public.image_shape)}, the images are {tuple(image_shape)}")
    if public.num_classes != num_classes:
        raise PluginError(f"public.num_classes is {public.num_classes!r}, the task has {num_classes}")
    if public.observed_kind not in OBSERVED_KINDS:
        raise PluginError(f"public.observed_kind is {public.observed_kind!r}, expected 'gradient' or 'update'")
    if public.classifier_key is not None and public.classifier_key not in observed:
        raise PluginError(
            f"public.classifier_key {public.classifier_key!r} is not a key of observed "
            f"(use None when the server does not see the classifier)"
        )
    if len(public.mean) != image_shape[0] or len(public.std) != image_shape[0]:
        raise PluginError(
            f"public.mean/std have {len(public.mean)}/{len(public.std)} values for {image_shape[0]} channels"
        )
    if not callable(obs.simulate):
        raise PluginError("Observation.simulate is not callable")
    if not isinstance(obs.unknowns, Mapping):
        raise PluginError(f"Observation.unknowns is a {type(obs.unknowns).__name__}, not a dict of bench.Unknown")
    for name, unknown in obs.unknowns.items():
        if not isinstance(unknown, Unknown):
            raise PluginError(f"unknowns[{name!r}] is a {type(unknown).__name__}, not a bench.Unknown")
        if not isinstance(unknown.guess, torch.Tensor) or tuple(unknown.guess.shape) != tuple(unknown.shape):
            got = describe(unknown.guess) if isinstance(unknown.guess, torch.Tensor) else type(unknown.guess).__name__
            raise PluginError(f"unknowns[{name!r}].guess is {got}, declared shape {list(unknown.shape)}")
    if not isinstance(obs.knowledge, str) or not obs.knowledge:
        raise PluginError("Observation.knowledge must be a non-empty string (recorded in every row)")
    if not isinstance(obs.exact, bool):
        raise PluginError(f"Observation.exact must be True or False, got {obs.exact!r}")
    require_jsonable(dict(obs.metrics), "Observation.metrics")
    require_jsonable(list(obs.notes), "Observation.notes")
    return obs


def candidate(
    obs: Observation, generator: torch.Generator, restarts: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Tensors]:
    """A random candidate as an attack would start (:mod:`bench.inversion.variables`): images, integer
    labels, label probabilities and the server's guesses of the unknowns (with a leading dimension
    ``restarts`` when given). The guesses are detached copies, whether optimisable or not."""
    public = obs.public
    lead = () if restarts is None else (restarts,)
    x = image_init(obs, generator, restarts)
    y = torch.randint(0, public.num_classes, (*lead, public.num_images), generator=generator).to(
        observation_device(obs)
    )
    soft = torch.softmax(label_logits_init(obs, generator, restarts), -1)
    guesses = {k: v.detach() for k, v in unknown_variables(obs, restarts)[0].items()}
    return x, y, soft, guesses


def simulate_checked(
    obs: Observation, x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]
) -> Tensors:
    """Call ``simulate`` and check its output against ``observed``: same keys, shapes, dtypes and devices."""
    labels = "label probabilities" if y.is_floating_point() else "integer labels"
    try:
        out = obs.simulate(x, y, dict(unknowns))
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"simulate() raised {first_line(exc)} on a candidate batch with {labels}") from None
    if not isinstance(out, Mapping):
        raise PluginError(f"simulate() returned a {type(out).__name__}, not a dict of tensors")
    missing, extra = sorted(set(obs.observed) - set(out)), sorted(set(out) - set(obs.observed))
    if missing or extra:
        parts = ([f"misses {', '.join(map(repr, missing[:3]))}"] if missing else []) + (
            [f"adds {', '.join(map(repr, extra[:3]))}"] if extra else []
        )
        raise PluginError(f"simulate() returned other keys than observed: it {' and '.join(parts)}")
    for key, want in obs.observed.items():
        got = out[key]
        if not isinstance(got, torch.Tensor):
            raise PluginError(f"simulate()[{key!r}] is a {type(got).__name__}, not a tensor")
        if got.shape != want.shape or got.dtype != want.dtype or got.device != want.device:
            raise PluginError(f"simulate()[{key!r}] is {describe(got)}, but observed[{key!r}] is {describe(want)}")
    return dict(out)


def matching_loss(simulated: Mapping[str, torch.Tensor], observed: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ‖simulated − observed‖², the objective every gradient-matching attack differentiates."""
    return l2_distance([simulated[k] for k in observed], [observed[k].detach() for k in observed])


def input_gradients(
    obs: Observation, x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor | None]:
    """Gradients of the matching loss with respect to x, y (when floating) and each unknown.

    ``None`` marks an input the simulated output does not depend on differentiably.
    Raises PluginError when the output carries no autograd graph at all.
    """
    inputs = {"x": x.detach().clone().requires_grad_(True)}
    if y.is_floating_point():
        inputs["y"] = y.detach().clone().requires_grad_(True)
    for name, value in unknowns.items():
        inputs[f"unknown {name!r}"] = value.detach().clone().requires_grad_(value.is_floating_point())
    y_in = inputs.get("y", y)
    u_in = {name: inputs[f"unknown {name!r}"] for name in unknowns}
    out = simulate_checked(obs, inputs["x"], y_in, u_in)
    if not any(t.requires_grad for t in out.values()):
        raise PluginError(
            "simulate() is not differentiable: none of its outputs requires grad for candidate "
            "images that do (was it detached, or computed outside torch?)"
        )
    wrt = {k: v for k, v in inputs.items() if v.requires_grad}
    grads = torch.autograd.grad(matching_loss(out, obs.observed), list(wrt.values()), allow_unused=True)
    return dict(zip(wrt, grads))


def require_x_gradient(grads: Mapping[str, torch.Tensor | None]) -> None:
    if grads.get("x") is None:
        raise PluginError(
            "simulate() is not differentiable in the candidate images x (its output does not "
            "depend on x through autograd)"
        )


def validate_observation(
    obs: object, num_images: int, image_shape: Sequence[int], num_classes: int, generator: torch.Generator
) -> Observation:
    """The harness's cheap per-target check: structure, simulate on a random candidate (integer and
    soft labels) has observed's keys/shapes/dtypes, and it is differentiable in x."""
    obs = check_observation(obs, num_images, image_shape, num_classes)
    x, y, soft, guesses = candidate(obs, generator)
    simulate_checked(obs, x, y, guesses)
    require_x_gradient(input_gradients(obs, x, soft, guesses))
    return obs


def validate_reconstruction(rec: object, obs: Observation) -> Reconstruction:
    """What ``reconstruct`` returned: images [≥ num_images, C, H, W] (finite, floating), labels
    [images] integers in range or None, a real loss, a whole number of iterations, info a dict that
    can be recorded as JSON."""
    if not isinstance(rec, Reconstruction):
        raise PluginError(f"reconstruct() returned a {type(rec).__name__}, not a bench.Reconstruction")
    public = obs.public
    images = rec.images
    if not isinstance(images, torch.Tensor):
        raise PluginError(f"Reconstruction.images is a {type(images).__name__}, not a tensor")
    want = f"[>= {public.num_images}, {', '.join(map(str, public.image_shape))}]"
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(public.image_shape) or images.shape[0] < public.num_images:
        raise PluginError(f"Reconstruction.images is {describe(images)}, expected {want}")
    if not images.is_floating_point():
        raise PluginError(f"Reconstruction.images has dtype {images.dtype}, expected floating point")
    if not bool(torch.isfinite(images).all()):
        raise PluginError("Reconstruction.images has non-finite values (return the best finite iterate)")
    if rec.labels is not None:
        labels = rec.labels
        if (
            not isinstance(labels, torch.Tensor)
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
        ):
            got = describe(labels) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise PluginError(f"Reconstruction.labels is {got}, expected integer labels or None")
        if tuple(labels.shape) != (images.shape[0],):
            raise PluginError(
                f"Reconstruction.labels is {describe(labels)}, expected [{images.shape[0]}] "
                f"(one per reconstructed image)"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= public.num_classes):
            raise PluginError(f"Reconstruction.labels has values outside 0..{public.num_classes - 1}")
    try:
        loss = float(rec.loss)
    except (TypeError, ValueError):
        raise PluginError(f"Reconstruction.loss is {rec.loss!r}, not a number") from None
    if not math.isfinite(loss) and not rec.diverged:
        raise PluginError(f"Reconstruction.loss is {loss} but diverged is False")
    if isinstance(rec.iterations, bool) or not isinstance(rec.iterations, numbers.Integral) or rec.iterations < 0:
        raise PluginError(f"Reconstruction.iterations is {rec.iterations!r}, expected a whole number >= 0")
    if not isinstance(rec.diverged, bool):
        raise PluginError(f"Reconstruction.diverged is {rec.diverged!r}, expected True or False")
    if not isinstance(rec.info, Mapping):
        raise PluginError(f"Reconstruction.info is a {type(rec.info).__name__}, not a dict")
    require_jsonable(dict(rec.info), "Reconstruction.info")
    return rec
