"""The tiny learning problem conformance checks run on, how a defense starts and observes on it
(:func:`start_case`, :func:`observe_case`: one seeding and call order for check-defense and
check-attack), and a fixture observation with unknowns.

Synthetic images (no data set to load) at the default data set's geometry (3×32×32, 10 classes), so
a defense's own default model works; the task is built exactly as ``bench run`` builds it
(:func:`bench.components.build_task`), with the defense's default model unless one is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data.base import ImageDataset, channel_stats
from bench.defense import ClientState, Defense, FLTask, ServerState
from bench.functional import loss_gradient
from bench.seeding import generator, seed_everything
from bench.components import Choice, build_task, model_choice
from bench.sgd_defense import initial_state, public_model, split_state
from bench.threat import LocalData, Observation, PublicKnowledge, Tensors, Unknown
from collections.abc import Mapping

IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
BATCH = 2  # two images per attacked batch: batch-dimension mistakes show, and it stays fast


@dataclass
class TinyCase:
    """A task and a few clients' data, small enough for a full check in seconds.

    ``target`` is the attacked batch (one mini-batch: a FedSGD gradient); ``cohort`` another client's
    batch of the same size (for defenses that reveal an aggregate); ``clients`` two clients with
    two mini-batches each, so one training round takes several local steps.
    """

    task: FLTask
    model_name: str
    target: LocalData
    cohort: LocalData
    clients: list[LocalData]


def tiny_data(seed: int) -> ImageDataset:
    """Uniform-noise images in [0, 1] with balanced labels (enough for shapes, gradients and a round)."""
    g = generator(seed, "check", "data")
    n = 6 * BATCH
    x = torch.rand(n, *IMAGE_SHAPE, generator=g)
    y = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    y[:BATCH] = torch.arange(BATCH)  # the target batch has distinct labels
    mean, std = channel_stats(x)
    return ImageDataset("check", x, y, x[:BATCH], y[:BATCH], tuple(map(str, range(NUM_CLASSES))), mean, std)


def tiny_case(defense: Defense, model: Choice | None, seed: int, device: torch.device) -> TinyCase:
    data = tiny_data(seed)
    chosen = model_choice(model, defense)
    _, task = build_task(chosen, data, device)
    x, y = data.normalise(data.train_x).to(device), data.train_y.to(device)

    def part(start: int, size: int) -> LocalData:
        return LocalData(x[start : start + size], y[start : start + size], BATCH)

    return TinyCase(
        task, chosen.name, part(0, BATCH), part(BATCH, BATCH), [part(2 * BATCH, 2 * BATCH), part(4 * BATCH, 2 * BATCH)]
    )


def start_case(
    defense: Defense, model: Choice | None, seed: int, device: torch.device
) -> tuple[TinyCase, ServerState, list[ClientState]]:
    """The tiny case, the defense set up on its task, the initial server state and two clients' states
    (drawn from torch's global RNG seeded for ``"init"``)."""
    case = tiny_case(defense, model, seed, device)
    defense.setup(case.task)
    seed_everything(seed, "check", "init")
    server = defense.init_server()
    clients = [defense.init_client(i) for i in range(2)]
    return case, server, clients


def observe_case(
    defense: Defense, case: TinyCase, server: ServerState, clients: list[ClientState], seed: int
) -> Observation:
    """What the server observes of client 0's target batch, client 1 (with the cohort batch) taking part."""
    return defense.observe(
        server, clients[0], case.target, [(clients[1], case.cohort)], generator(seed, "check", "observe")
    )


def private_head_observation(task: FLTask, target: LocalData, seed: int) -> tuple[Observation, Tensors]:
    """FedSGD where the classifier head stays on the client (HyperFL-like): the server observes the
    gradient of the body only; the head is unknown (its weight optimisable, the rest not).

    Returns the observation and the true head, for checking that an attack handles unknowns.
    """
    torch.manual_seed(seed)
    model = task.new_model().eval()
    params, buffers = split_state(model, initial_state(model))
    head = [k for k in params if k.startswith(task.classifier + ".")]
    body = [k for k in params if k not in head]
    g = generator(seed, "check", "head")
    truth = {
        f"head.{k.rsplit('.', 1)[1]}": params[k] + 0.1 * torch.randn(params[k].shape, generator=g).to(params[k])
        for k in head
    }

    def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
        full = {
            **{k: params[k] for k in body},
            **{f"{task.classifier}.{n.split('.', 1)[1]}": v for n, v in unknowns.items()},
        }
        grads = loss_gradient(model, full, x, y, buffers, create_graph=True)
        return {k: grads[k] for k in body}

    observed = {k: v.detach() for k, v in simulate(target.x, target.y, truth).items()}
    unknowns = {
        name: Unknown(
            tuple(value.shape),
            f"the client's private classifier {name.split('.')[1]}",
            guess=params[f"{task.classifier}.{name.split('.')[1]}"].clone(),
            optimisable=name.endswith("weight"),
        )
        for name, value in truth.items()
    }
    public = PublicKnowledge(
        model=public_model(model, initial_state(model)),
        num_images=len(target),
        image_shape=task.image_shape,
        num_classes=task.num_classes,
        mean=task.mean,
        std=task.std,
        observed_kind="gradient",
        classifier_key=None,
        protocol={"batch_size": target.batch_size},
    )
    obs = Observation(
        observed=observed,
        public=public,
        simulate=simulate,
        unknowns=unknowns,
        knowledge="adaptive",
        notes=("the classifier head is private: only the body's gradient is observed",),
    )
    return obs, truth
