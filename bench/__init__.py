"""bench: a benchmark of privacy attacks and defenses in federated learning.

The public API for plug-ins: :class:`Defense`, :class:`Attack`, :class:`Observation` and friends,
:class:`Option`, and the shared helpers in :mod:`bench.functional`, :mod:`bench.sgd_defense` and
:mod:`bench.inversion`.
"""

from bench.attack import Attack, Reconstruction
from bench.data.base import Dataset, ImageDataset
from bench.defense import ClientState, Defense, FLTask, ServerState
from bench.errors import BenchError
from bench.models.base import Model
from bench.options import Option
from bench.threat import LocalData, Observation, PublicKnowledge, Tensors, Unknown, Upload

__version__ = "0.1.0"

__all__ = [
    "Attack",
    "BenchError",
    "ClientState",
    "Dataset",
    "Defense",
    "FLTask",
    "ImageDataset",
    "LocalData",
    "Model",
    "Observation",
    "Option",
    "PublicKnowledge",
    "Reconstruction",
    "ServerState",
    "Tensors",
    "Unknown",
    "Upload",
    "__version__",
]
