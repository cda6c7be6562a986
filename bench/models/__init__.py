"""Model architectures (each registered under the ``bench.models`` entry-point group)."""

from bench.models.base import Model, classifier_of

__all__ = ["Model", "classifier_of"]
