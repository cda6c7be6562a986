"""The federation: how data are spread over clients and how a round runs (the public protocol's
settings), and the data set split over clients, normalised and on the device."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from bench.data.base import ImageDataset
from bench.data.partition import ClientSplit, split_clients
from bench.errors import BenchError
from bench.seeding import generator
from bench.threat import LocalData


@dataclass(frozen=True)
class FLSettings:
    """How data are spread over clients and how a round runs (the public protocol)."""

    clients: int = 20
    partition: str = "dominant"
    train_per_client: int | None = None
    test_per_client: int | None = None
    batch_size: int = 50
    local_epochs: int = 1
    rounds: int = 0
    eval_every: int = 1

    def validate(self) -> None:
        for name in ("clients", "batch_size", "local_epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise BenchError(f"--rounds must be >= 0, got {self.rounds}")


class Federation:
    """The data set split over clients, normalised and on the device."""

    def __init__(self, data: ImageDataset, settings: FLSettings, seed: int, device: torch.device) -> None:
        self.data = data
        self.settings = settings
        self.splits: list[ClientSplit] = split_clients(
            settings.partition,
            data.train_y,
            data.test_y,
            data.num_classes,
            settings.clients,
            generator(seed, "partition"),
            settings.train_per_client,
            settings.test_per_client,
        )
        self.train_x = data.normalise(data.train_x).to(device)
        self.train_y = data.train_y.to(device)
        self.test_x = data.normalise(data.test_x).to(device)
        self.test_y = data.test_y.to(device)

    def local_train(self, client: int, batch_size: int | None = None) -> LocalData:
        idx = self.splits[client].train.to(self.train_x.device)
        return LocalData(self.train_x[idx], self.train_y[idx], batch_size or self.settings.batch_size)

    def local_test(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.splits[client].test.to(self.test_x.device)
        return self.test_x[idx], self.test_y[idx]

    def validation_split(self, fraction: float, seed: int) -> Federation:
        """The same clients with a validation split carved from each one's *training* examples: a share
        ``fraction`` of them (drawn per client with the seed) becomes its local "test" set, the rest its
        training set. The test split is not touched, so choices made on it (a learning rate) never see
        the data the reported accuracy is measured on."""
        if not 0 < fraction < 1:
            raise BenchError(f"the validation fraction must be in (0, 1), got {fraction}")
        split = copy.copy(self)
        split.test_x, split.test_y = self.train_x, self.train_y
        split.splits = []
        for c, own in enumerate(self.splits):
            held = round(fraction * len(own.train))
            if held < 1 or held >= len(own.train):
                raise BenchError(
                    f"client {c} has {len(own.train)} training examples: too few to hold out a "
                    f"validation share of {fraction:g} and still train (use more --train-per-client)"
                )
            order = own.train[torch.randperm(len(own.train), generator=generator(seed, "validation", c))]
            split.splits.append(ClientSplit(train=order[held:], test=order[:held]))
        return split
