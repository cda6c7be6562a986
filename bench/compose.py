"""Composed defenses: ``--defense A+B`` runs defense A's client step inside defense B.

B wraps a client computation (it declares ``wraps_client = True``: ``he``, which encrypts what each
client sends and lets the server decrypt only the aggregate) and A is a FedAvg-family defense (an
:class:`~bench.sgd_defense.SGDDefense`: ``dp``, ``soteria``, a pruning plug-in ...), so ``dp+he`` is
DP-SGD under secure aggregation, the way Flower wraps a strategy with DP. Options go to whichever of
the two declares them (the plain SGD client's ``lr``, ``momentum``, ``weight_decay`` and
``local_steps`` to both: it is one protocol); an option neither declares is a one-line error. The
composed defense's config records B's options and A's under ``client``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from bench.component import Component
from bench.errors import BenchError, choices_text

SEPARATOR = "+"


def is_composed(spec: str) -> bool:
    return SEPARATOR in spec


def parts(spec: str) -> tuple[str, str]:
    inner, _, outer = spec.partition(SEPARATOR)
    if not inner or not outer or SEPARATOR in outer:
        raise BenchError(
            f"composed defense {spec!r} must be INNER+OUTER, e.g. 'dp+he' (DP-SGD under secure aggregation)"
        )
    return inner, outer


def compose(spec: str, values: Mapping[str, Any], load: Any) -> Component:
    """The outer defense of ``spec`` holding the inner one as its client step (``load(kind, name)`` loads a class)."""
    from bench.sgd_defense import SGDDefense

    inner_name, outer_name = parts(spec)
    outer_cls, inner_cls = load("defense", outer_name), load("defense", inner_name)
    if not getattr(outer_cls, "wraps_client", False):
        raise BenchError(
            f"defense {outer_name!r} cannot wrap another defense's client step; it must be one that "
            f"aggregates clients' uploads (e.g. 'he')"
        )
    if not issubclass(inner_cls, SGDDefense):
        raise BenchError(
            f"defense {inner_name!r} is not a FedAvg-family defense (bench.sgd_defense.SGDDefense), "
            f"so {outer_name!r} cannot run its client step"
        )
    inner_options = {o.name for o in inner_cls.options} | set(inner_cls.presets and ["preset"])
    outer_options = {o.name for o in outer_cls.options} | set(outer_cls.presets and ["preset"])
    unknown = sorted(set(values) - inner_options - outer_options)
    if unknown:
        raise BenchError(
            f"defense {spec!r} has no option {unknown[0]!r}; valid options: "
            f"{choices_text(sorted(inner_options | outer_options))}"
        )
    inner = inner_cls(**{k: v for k, v in values.items() if k in inner_options})
    outer = outer_cls(**{k: v for k, v in values.items() if k in outer_options})
    outer.inner = inner
    outer.config = MappingProxyType({**outer.config, "client": {"name": inner_name, **inner.config}})
    return outer
