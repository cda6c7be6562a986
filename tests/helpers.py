"""Small builders shared by tests."""

from __future__ import annotations

import torch

from bench.defense import FLTask
from bench.models.cnn import CNN
from bench.models.lenet import LeNet


def module_task(new_model, model_name: str, classifier: str, image_shape, num_classes: int, local_epochs: int = 1):
    """An FL task around any ``nn.Module`` factory (images normalised with mean 0.5, std 0.25), on CPU."""
    return FLTask(
        new_model=new_model,
        model_name=model_name,
        classifier=classifier,
        image_shape=image_shape,
        num_classes=num_classes,
        mean=(0.5,) * image_shape[0],
        std=(0.25,) * image_shape[0],
        device=torch.device("cpu"),
        local_epochs=local_epochs,
    )


def lenet_task(image_shape=(3, 32, 32), num_classes=10, local_epochs=1, model=None) -> FLTask:
    model = model or LeNet()
    return module_task(
        lambda: model.build(image_shape, num_classes), "lenet", "fc", image_shape, num_classes, local_epochs
    )


def exploding(obs, after: int = 4):
    """``obs`` whose simulator returns NaN from its ``after``+1-th call on (a diverging attack)."""
    from bench.threat import Observation

    calls = {"n": 0}

    def simulate(x, y, unknowns):
        calls["n"] += 1
        sim = obs.simulate(x, y, unknowns)
        return {k: v * (float("nan") if calls["n"] > after else 1.0) for k, v in sim.items()}

    return Observation(observed=obs.observed, public=obs.public, simulate=simulate)


# A one-round `bench train` on the quick protocol at the smallest size (format: defense=, extra= flags;
# append the output dir).
QUICK_TRAIN = (
    "train --defense {defense} {extra}--protocol quick --dataset digits --model lenet --rounds 1 --clients 2 "
    "--train-per-client 10 --test-per-client 5 --local-epochs 1 --output-dir"
)


def cnn_task(shape: tuple[int, int, int] = (3, 32, 32)) -> FLTask:
    """The HyperFL paper's CNN as an FL task (classifier fc2), for a colour or a grey-scale shape."""
    return module_task(lambda: CNN().build(shape, 10), "cnn", "fc2", shape, 10)


def local_steps(defense, steps: int, batch: int = 1):
    """``defense`` attacked after ``steps`` local SGD steps on its one batch of ``batch`` examples (a local round
    of ``steps`` epochs over that batch: what the removed ``local_steps`` option did)."""
    from bench.round import Round

    defense.use_round(Round("local", batch, batch, steps))
    return defense
