"""One block further down: the input of the block below the matched one, through its max-pool.

After the first image recovery, the block just below the matched input (on the HyperFL paper's CNN,
conv2 under conv3's peeled input) has a known output and upstream gradient, and an observed weight
gradient. Its input is solved from them with the switches searched by the block's own residual
(:mod:`bench.inversion.switches`), starting from the recovered image's; a second recovery then matches
that input and replays the layers below it. The attack combines the two images (:mod:`attacks.analytic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from bench.attack import Reconstruction
from bench.attacks.analytic.plan import Plan
from bench.inversion.linear import as_gradient, lower_keys
from bench.inversion.peel import MatchTarget
from bench.inversion.recursive import BlockEvidence, chain_states, unobserved
from bench.inversion.switches import search_switches


def lower_plan(plan: Plan, image: torch.Tensor, replay: bool) -> tuple[Plan, dict[str, Any]] | str:
    """The plan that matches the input of the block below ``plan``'s matched input, solved from the block's
    evidence with its switches searched, starting from ``image``'s; or why there is none. ``replay``: the
    layers below it are replayed (the attack's replay weight is not 0)."""
    if not plan.reading.exact or not bool(plan.target.known.all()):
        return "the matched input is not known exactly"
    if isinstance(plan.convs, str):
        return plan.convs
    names = [b.name for b in plan.convs]
    if plan.target.layer == plan.reading.layer.name:
        above = len(plan.convs)  # the leaky layer's input is the top block's output
    elif plan.target.layer in names:
        above = names.index(plan.target.layer)
    else:
        return "the matched input is the image"
    if above < 2:
        return "the block below the matched input takes the image: the recovery itself inverts it"
    block = plan.convs[above - 1]
    missing = unobserved(plan.obs, block, plan.state)
    if missing:
        return missing
    states = chain_states(plan.convs[:above], plan.state, image)  # each block's input, then the matched one
    shape = states[-1].shape
    evidence = BlockEvidence.of(
        block,
        plan.state,
        as_gradient(plan.obs, block.weight_key),
        plan.target.features.double().reshape(shape),
        plan.target.upstream.double().reshape(shape),
    )
    search = search_switches(evidence, states[-2])
    dtype = plan.target.features.dtype
    inputs, upstream = search.solution.inputs.flatten().to(dtype), search.solution.upstream.flatten().to(dtype)
    target = MatchTarget(block.name, inputs, torch.ones_like(inputs), upstream)
    keys = lower_keys(plan.obs, block.name) if replay else []
    below = [as_gradient(plan.obs, k) for k in keys]
    lower = replace(plan, target=target, keys=keys, below=below, chain="not repeated after the descent")
    info = {
        "method": "switch search by the block's residual (bench.inversion.switches), then a second recovery",
        "block": block.name,
        "switches_moved": search.moved,
        "relative_residual": search.solution.residual,
    }
    return lower, info


Recover = Callable[[list[Plan], list[int]], list[Reconstruction]]  # plans, their indices among the targets


def descend(
    plans: list[Plan],
    recs: list[Reconstruction],
    mode: str,
    replay: bool,
    recover: Recover,
    score: Callable[[Plan, torch.Tensor], float],
) -> list[Reconstruction]:
    """Each target's first recovery ``recs[i]``, combined with a second recovery that matches the input of
    the block below (``recover``): their mean ('average'), or the one whose matching loss under the first
    plan (``score``) is lower ('compete'); 'off' keeps the first. ``info["descent"]`` says what ran."""
    ready: dict[int, tuple[Plan, dict[str, Any]]] = {}
    groups: dict[tuple, list[int]] = {}
    for i, (plan, rec) in enumerate(zip(plans, recs)):
        closed = rec.info["recursion"].get("won") or rec.info["peel"].get("won")
        descent = (
            "off (descend='off')"
            if mode == "off"
            else "the answer is closed-form (the recursion's or the peeled image), not an estimate"
            if closed
            else lower_plan(plan, rec.images[0], replay)
        )
        if isinstance(descent, str):
            rec.info["descent"] = {"ran": False, "why_not": descent}
        else:
            ready[i] = descent
            groups.setdefault(descent[0].group(), []).append(i)
    for members in groups.values():
        for i, rec in zip(members, recover([ready[i][0] for i in members], members)):
            first, info = recs[i], dict(ready[i][1])
            images, loss = rec.images, score(plans[i], rec.images[0])
            info.update(
                ran=True,
                combined=mode,
                matching_loss=loss,
                selected_tv=rec.info["selected_tv"],
                restart_losses=rec.info["restart_losses"],
            )
            if mode == "average":
                images = (first.images + rec.images) / 2
                loss = info["average_matching_loss"] = score(plans[i], images[0])
                use = bool(rec.info["improved"]) and not rec.diverged  # a failed recovery is not averaged in
            else:
                use = loss < first.loss  # a NaN never wins
            info["used"] = use
            if use:
                recs[i] = Reconstruction(
                    images=images,
                    labels=first.labels,
                    loss=loss,
                    iterations=first.iterations + rec.iterations,
                    diverged=first.diverged or rec.diverged,
                    info=first.info,
                )
            else:
                first.iterations += rec.iterations
            recs[i].info["descent"] = info
    return recs
