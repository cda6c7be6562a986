"""Shared machinery of optimisation-based attacks: objectives, priors, label rules, loops."""

from bench.inversion.labels import classifier_signal, count_labels, idlg_label, infer_labels, prediction_offset
from bench.inversion.objective import DISTANCES, GradientMatching, total_variation
from bench.inversion.optimise import (
    BestIterate,
    BestIterates,
    OptimisationResult,
    RestartsResult,
    adam,
    lbfgs,
    lbfgs_options,
    step_milestones,
)
from bench.inversion.variables import image_init, label_logits_init, observation_device, unknown_variables

__all__ = [
    "DISTANCES",
    "BestIterate",
    "BestIterates",
    "GradientMatching",
    "OptimisationResult",
    "RestartsResult",
    "adam",
    "classifier_signal",
    "count_labels",
    "idlg_label",
    "image_init",
    "infer_labels",
    "label_logits_init",
    "lbfgs",
    "lbfgs_options",
    "observation_device",
    "prediction_offset",
    "step_milestones",
    "total_variation",
    "unknown_variables",
]
