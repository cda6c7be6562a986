"""The attacked client's round: what it computes on its private examples before it sends anything.

A round is declared once and means the same thing for every defense that trains locally, in the
client's step and in the attacker's simulator alike:

* ``fedsgd``: the client sends the gradient of one mini-batch of ``batch_size`` examples (one step of
  FedSGD; the DLG / Inverting Gradients setting, and the strongest-attacker corner);
* ``local``: the client trains ``local_epochs`` passes over its ``local_examples`` private examples in
  mini-batches of ``batch_size`` (fixed order in the attack: the server knows the protocol, not the
  data), after ``head_epochs`` passes on its classifier head alone when the round has any, and sends
  its model update (FedAvg). Every one of the ``local_examples`` is the target: the attacker
  reconstructs them all and each is scored.

``head_epochs`` ``None`` means the defense's own protocol (HyperFL trains its head for one epoch first;
the FedAvg family has no head phase), so a row can run HyperFL's round on FedAvg (``head_epochs=1``)
as a control. The client's optimiser is not part of a round: it is the defense's (lr, momentum, weight
decay), made equal across a comparison by :func:`bench.protocols.equal_optimiser`.

A defense declares the kinds it can run (``Defense.round_kinds``); the harness gives it the round with
:meth:`bench.defense.Defense.use_round` before it observes, and records the round in every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError, choices_text

#: The kinds of round, and what the client sends after each.
ROUND_KINDS: dict[str, str] = {
    "fedsgd": "the gradient of one mini-batch (FedSGD)",
    "local": "the model update after local epochs over the client's local examples (FedAvg)",
}


@dataclass(frozen=True)
class Round:
    """One client's round in the attack setting (see the module docstring). Public knowledge: the server
    fixes the protocol; only the examples are private."""

    kind: str = "fedsgd"
    batch_size: int = 1
    local_examples: int | None = None  # local: N examples (None: one mini-batch, N = batch_size)
    local_epochs: int = 1
    head_epochs: int | None = None  # local: passes on the head alone first; None: the defense's own

    def __post_init__(self) -> None:
        if self.kind not in ROUND_KINDS:
            raise BenchError(f"unknown round {self.kind!r}; valid: {choices_text(ROUND_KINDS)}")
        if self.batch_size < 1:
            raise BenchError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.kind == "fedsgd":
            if self.local_examples not in (None, self.batch_size):
                raise BenchError(
                    f"--round fedsgd sends the gradient of one batch of --batch-size {self.batch_size} examples; "
                    f"--local-examples {self.local_examples} needs --round local"
                )
            if self.head_epochs:
                raise BenchError("--head-epochs needs --round local (a FedSGD client sends one gradient)")
            return
        if self.local_examples is not None and self.local_examples < self.batch_size:
            raise BenchError(f"--local-examples must be >= --batch-size ({self.batch_size}), got {self.local_examples}")
        if self.local_epochs < 1:
            raise BenchError(f"--local-epochs must be >= 1, got {self.local_epochs}")
        if self.head_epochs is not None and self.head_epochs < 0:
            raise BenchError(f"--head-epochs must be >= 0, got {self.head_epochs}")

    @property
    def examples(self) -> int:
        """The client's examples in the round: every one is a target of the attack."""
        return self.batch_size if self.kind == "fedsgd" or self.local_examples is None else self.local_examples

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.examples // self.batch_size)

    def steps(self, own_head_epochs: int = 0) -> int:
        """Local SGD steps of the round (the head phase's included; ``own_head_epochs``: the defense's own)."""
        if self.kind == "fedsgd":
            return 1
        head = own_head_epochs if self.head_epochs is None else self.head_epochs
        return (self.local_epochs + head) * self.batches_per_epoch

    def head_epochs_or(self, own: int) -> int:
        """The round's head epochs, or the defense's ``own`` where the round leaves them to it (always 0 at FedSGD)."""
        if self.kind == "fedsgd":
            return 0
        return own if self.head_epochs is None else self.head_epochs

    def as_dict(self) -> dict[str, Any]:
        """The round as recorded in rows (``config.run.round``): FedSGD needs only its kind and batch size."""
        if self.kind == "fedsgd":
            return {"kind": "fedsgd", "batch_size": self.batch_size}
        return {
            "kind": "local",
            "batch_size": self.batch_size,
            "local_examples": self.examples,
            "local_epochs": self.local_epochs,
            "head_epochs": self.head_epochs,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, batch_size: int = 1) -> Round:
        """The round a row records (rows from before rounds were recorded: FedSGD at their batch size)."""
        if not values:
            return cls("fedsgd", batch_size)
        return cls(
            str(values.get("kind", "fedsgd")),
            int(values.get("batch_size", batch_size)),
            values.get("local_examples"),
            int(values.get("local_epochs", 1)),
            values.get("head_epochs"),
        )

    def label(self) -> str:
        """A short readable name: ``FedSGD, batch 1`` or ``local: 1 epoch × 4 examples in batches of 1``."""
        if self.kind == "fedsgd":
            return f"FedSGD, batch {self.batch_size}"
        epochs = f"{self.local_epochs} epoch{'s' * (self.local_epochs != 1)}"
        head = "" if self.head_epochs is None else f", head epochs {self.head_epochs}"
        return f"local: {epochs} × {self.examples} examples in batches of {self.batch_size}{head}"


FEDSGD = Round()
