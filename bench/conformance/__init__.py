"""Conformance of plug-ins to the contracts in ``docs/architecture.md``.

* :mod:`~bench.contract`: the Observation and Reconstruction contracts as checks that
  raise :class:`~bench.errors.PluginError`; the harness runs them on every target.
* :func:`check_defense` / :func:`check_attack` (``bench check-defense`` / ``check-attack``): every
  check on a tiny case, reported one line each as passed, failed (with the reason), warned or skipped.
"""

from bench.conformance.attack_checks import check_attack
from bench.contract import validate_observation, validate_reconstruction
from bench.conformance.defense_checks import check_defense
from bench.conformance.report import Report, Result

__all__ = ["Report", "Result", "check_attack", "check_defense", "validate_observation", "validate_reconstruction"]
