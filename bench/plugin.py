"""Everything a plug-in needs, in one module: ``from bench.plugin import ...``.

What docs/writing-a-defense.md and ``examples/`` use, and nothing they should not lean on. The base
classes (:class:`Defense`, :class:`SGDDefense` with its hooks, :class:`Attack`), the threat model's
types (:class:`Observation`, :class:`PublicKnowledge`, :class:`Unknown`, :class:`Upload`,
:class:`LocalData`), options, the knowledge levels, and the shared machinery attacks and defenses
build on (the SGD client and its simulator, the functional model calls, the inversion toolkit).
A name imported from here stays where it is across versions; the modules behind it may move.
"""

from bench.attack import Attack, Reconstruction
from bench.data.base import Dataset, ImageDataset
from bench.defense import KNOWLEDGE_LEVELS, ClientState, Defense, FLTask, ServerState
from bench.errors import BenchError
from bench.functional import forward, loss_gradient, per_example_gradients, sgd_steps
from bench.inversion import (
    GradientMatching,
    adam,
    image_init,
    infer_labels,
    label_logits_init,
    lbfgs,
    unknown_variables,
)
from bench.models.base import Model
from bench.options import Option
from bench.progress import Progress
from bench.sgd_defense import (
    SGD_OPTIONS,
    SGDDefense,
    SGDProtocol,
    client_round,
    payload_bytes,
    sgd_public_knowledge,
    sgd_simulator,
    split_state,
)
from bench.threat import LocalData, Observation, PublicKnowledge, Simulator, Tensors, Unknown, Upload

__all__ = [
    "KNOWLEDGE_LEVELS",
    "SGD_OPTIONS",
    "Attack",
    "BenchError",
    "ClientState",
    "Dataset",
    "Defense",
    "FLTask",
    "GradientMatching",
    "ImageDataset",
    "LocalData",
    "Model",
    "Observation",
    "Option",
    "Progress",
    "PublicKnowledge",
    "Reconstruction",
    "SGDDefense",
    "SGDProtocol",
    "ServerState",
    "Simulator",
    "Tensors",
    "Unknown",
    "Upload",
    "adam",
    "client_round",
    "forward",
    "image_init",
    "infer_labels",
    "label_logits_init",
    "lbfgs",
    "loss_gradient",
    "payload_bytes",
    "per_example_gradients",
    "sgd_public_knowledge",
    "sgd_simulator",
    "sgd_steps",
    "split_state",
    "unknown_variables",
]
