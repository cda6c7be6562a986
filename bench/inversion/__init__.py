"""Shared machinery of optimisation-based attacks: objectives, priors, label rules, loops."""
from bench.inversion.objective import DISTANCES, GradientMatching, total_variation
from bench.inversion.optimise import BestIterate, OptimisationResult, lbfgs
from bench.inversion.variables import image_init, unknown_variables

__all__ = ["DISTANCES", "BestIterate", "GradientMatching", "OptimisationResult", "image_init", "lbfgs",
           "total_variation", "unknown_variables"]
