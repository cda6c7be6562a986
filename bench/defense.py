"""What a defense must implement: the client step, the server's aggregation, and the Observation.

A defense is one file. It states (1) how a client computes what it sends (``client_update``),
(2) how the server aggregates (``aggregate``), and (3) what the server observes of one target
client under its threat model (``observe``). The same object drives federated training (utility)
and the attack experiment (privacy), so both measure the same protocol. Like Flower's ``Strategy``
the surface is a handful of explicit methods; like Opacus' ``PrivacyEngine`` the privacy
bookkeeping travels with what it protects (``Upload.metrics``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.component import Component
from bench.errors import BenchError, choices_text
from bench.round import FEDSGD, Round
from bench.threat import LocalData, Observation, Tensors, Upload


@dataclass(frozen=True)
class FLTask:
    """The learning problem every defense is set up with.

    ``new_model`` builds a fresh network (parameters drawn from torch's global RNG, which the
    harness seeds); ``classifier`` is the module path of its final linear layer (the head).
    ``local_epochs`` is the protocol's number of passes over a client's local data per round.
    """

    new_model: Callable[[], nn.Module]
    model_name: str
    classifier: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    local_epochs: int = 1


#: The standard attacker-knowledge levels, what each attacker knows. A defense declares the levels it can
#: build an Observation for (``Defense.knowledge_levels``); the user picks one (``--knowledge``), and every
#: result row records it. An oracle bounds what the attacker *knows*, not what leaks: a weaker optimiser
#: with more knowledge can still reconstruct worse than an adaptive attack.
KNOWLEDGE_LEVELS: dict[str, str] = {
    "unaware": "knows the FL protocol and the architecture but ignores the defense: it replays the undefended "
    "client's computation",
    "adaptive": "knows the defense's mechanism and its public parameters and exploits them (replays public steps, "
    "recovers or optimises what it can)",
    "oracle": "is handed the client's private state (e.g. HyperFL's embedding and head): an upper bound on what "
    "the attacker knows, not on what leaks",
}

#: Server-side state broadcast to clients (e.g. global parameters and buffers), by name.
ServerState = Tensors
#: A client's private state that never leaves it (e.g. HyperFL's embedding and head), by name.
ClientState = Tensors


class Defense(Component):
    """Base class of a federated-learning defense (see the module docstring)."""

    kind: ClassVar[str] = "defense"
    #: The model used when the user names none (e.g. HyperFL's CNN); ``None`` means the harness default.
    default_model: ClassVar[str | None] = None
    #: The attacker-knowledge levels ``observe`` supports (names from :data:`KNOWLEDGE_LEVELS`, or the
    #: defense's own, documented in its docstring). A defense with no mechanism to know (FedAvg) has one.
    knowledge_levels: ClassVar[tuple[str, ...]] = ("adaptive",)
    #: The level used when the user names none; one of ``knowledge_levels``.
    default_knowledge: ClassVar[str] = "adaptive"
    #: The kinds of attacked round ``observe`` can build (:data:`bench.round.ROUND_KINDS`): a defense whose client
    #: trains locally runs ``local`` rounds too. The default is FedSGD only, for defenses that do not say.
    round_kinds: ClassVar[tuple[str, ...]] = ("fedsgd",)
    #: The options of the client's local SGD, by role (``lr``, ``momentum``, ``weight_decay``), that a comparison
    #: may set to its common optimiser (:func:`bench.protocols.equal_optimiser`). Options not named here (a
    #: server's optimiser, a method's own inner loop) are never touched by that rule.
    client_optimiser: ClassVar[dict[str, str]] = {}

    @property
    def knowledge(self) -> str:
        """The attacker-knowledge level ``observe`` builds its Observation for (set by :meth:`use_knowledge`)."""
        return self.__dict__.get("_knowledge", self.default_knowledge)

    def use_knowledge(self, level: str | None) -> str:
        """Build later Observations for the attacker ``level`` (``None``: the default). Unknown: a BenchError."""
        level = self.default_knowledge if level is None else level
        if level not in self.knowledge_levels:
            raise BenchError(
                f"defense {self.name or type(self).__name__!r} has no knowledge level {level!r}; "
                f"valid: {choices_text(self.knowledge_levels)}"
            )
        self.__dict__["_knowledge"] = level
        return level

    @property
    def round(self) -> Round:
        """The attacked client's round ``observe`` builds its Observation for (set by :meth:`use_round`)."""
        return self.__dict__.get("_round", FEDSGD)

    def use_round(self, round_: Round) -> Round:
        """Build later Observations for the attacked round ``round_``; a kind the defense does not declare
        (:attr:`round_kinds`) is a BenchError."""
        if round_.kind not in self.round_kinds:
            raise BenchError(
                f"defense {self.name or type(self).__name__!r} cannot run a {round_.kind!r} round; valid: "
                f"{choices_text(self.round_kinds)}"
            )
        self.__dict__["_round"] = round_
        return round_

    def setup(self, task: FLTask) -> None:
        """Called once before anything else; keep what you need from the task."""
        self.task = task

    @abstractmethod
    def init_server(self) -> ServerState:
        """The server's initial state (global parameters). Seeded by the harness."""

    def init_client(self, client_id: int) -> ClientState:
        """A client's initial private state; empty when the defense keeps none."""
        return {}

    @abstractmethod
    def client_update(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> Upload:
        """Run one round of local computation on ``data``; return exactly what the client sends.

        May update ``client`` in place (its private state). ``generator`` drives shuffling and any
        randomness the client uses (e.g. DP noise); ``None`` means no shuffling.
        """

    @abstractmethod
    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        """Combine the round's uploads into the next server state."""

    def server_metrics(self) -> dict[str, Any]:
        """Server-side costs of the last ``aggregate`` call (e.g. seconds to decrypt), for training rows.

        Client-side costs travel in ``Upload.metrics``; this is the server's counterpart. Default: none.
        ``modelled_seconds``, when given, is the round's time that was modelled rather than run (e.g. a
        simulated cryptosystem's encryption and decryption, from measured rates): training rows add it
        to the measured wall time in ``modelled_seconds_per_round``.
        """
        return {}

    @abstractmethod
    def predict(self, server: ServerState, client: ClientState, x: torch.Tensor) -> torch.Tensor:
        """Logits of the model this client would use for inference (for test accuracy)."""

    def personalise(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> None:
        """What a client does with the current server state on its own training data before it is
        evaluated, outside the protocol (nothing is sent): e.g. fine-tuning a head (FedAvg + FT). It
        stores the result in ``client`` for :meth:`predict`. Default: nothing."""

    def evaluated_model(self) -> str:
        """What :meth:`predict` evaluates, recorded as ``evaluated`` in training rows: ``"global"`` (the
        server's model as is), ``"personalised"`` (a model built from private client state, e.g. HyperFL's
        embedding and head) or ``"global+finetuned-head"``. Override when it is not the global model."""
        return "global"

    @abstractmethod
    def observe(
        self,
        server: ServerState,
        client: ClientState,
        target: LocalData,
        cohort: Sequence[tuple[ClientState, LocalData]],
        generator: torch.Generator | None,
    ) -> Observation:
        """What the honest-but-curious server sees when ``target`` is the client's local data.

        ``target`` holds the examples of the attacked round (:attr:`round`: one mini-batch at FedSGD, the
        round's local examples otherwise; ``target.batch_size`` is the round's mini-batch size). Built for the
        attacker of :attr:`knowledge` (``Observation.knowledge`` must name it). ``cohort`` are
        other clients taking part in the same round (with their states and data),
        for defenses that reveal only an aggregate. Must not mutate ``server`` or ``client``.
        """

    def diagnostics(
        self, server: ServerState, client: ClientState, target: LocalData, obs: Observation
    ) -> dict[str, Any]:
        """Evaluator-only numbers about ``obs`` that need the truth (the client's private state, its data):
        e.g. how far what the attacker reads off the upload is from what the client really holds.

        The harness calls it after the attack has been given ``obs`` and records the result in the row
        (``diagnostics``); attacks never see it. ``Observation.metrics`` carries only what the server knows.
        Default: none.
        """
        return {}

    def true_unknowns(self, client: ClientState, obs: Observation) -> Tensors | None:
        """The true values of ``obs.unknowns`` for this client, or ``None`` when they cannot be given.

        Never shown to an attack: ``bench check-defense`` uses them to verify that ``simulate`` on the
        true inputs reproduces what was observed, and that the server's guesses are not the truth.
        The default looks each unknown up under the same name in the client's private state;
        override it when the names differ.
        """
        if not all(name in client for name in obs.unknowns):
            return None
        return {name: client[name] for name in obs.unknowns}
