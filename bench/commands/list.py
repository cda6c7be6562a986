"""``bench list``: registered defenses, attacks, data sets and models, with their options."""

from __future__ import annotations

import argparse

from bench import registry
from bench.options import Option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="show registered defenses, attacks, data sets and models",
        description="Show every registered component (built-in or plug-in) with a one-line "
        "description and its options with defaults. Plug-ins (components registered "
        "by another installed distribution) are marked with that distribution.",
    )
    p.add_argument(
        "kind", nargs="?", choices=["defense", "attack", "dataset", "model"], help="only this kind of component"
    )
    p.set_defaults(handler=handle)


def _option_line(o: Option) -> str:
    rng = o.describe_range()
    return f"      {o.name}={o.default!r} ({o.type.__name__}{', ' + rng if rng else ''}): {o.help}"


def handle(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else ["defense", "attack", "dataset", "model"]
    for kind in kinds:
        print(f"{kind}s:")
        for name, cls, summary in registry.describe(kind):
            origin = registry.origin(kind, name)
            source = f" [plug-in: {origin}]" if origin else ""
            print(f"  {name}{source} — {summary}")
            if cls is None:
                continue
            for option in cls.options:
                print(_option_line(option))
            if cls.presets:
                print(f"      presets: {', '.join(cls.presets)}  (use preset=NAME)")
            levels = getattr(cls, "knowledge_levels", None)
            default = getattr(cls, "default_knowledge", None)
            if kind == "defense" and levels:
                others = [level for level in levels if level != default]
                print(
                    f"      knowledge: {default} (default)"
                    + "".join(f", {o}" for o in others)
                    + "  (use --knowledge NAME)"
                )
        if kind == "defense":
            print(
                "  compose: --defense INNER+OUTER runs a FedAvg-family defense's client step inside one that "
                "aggregates (e.g. dp+he: DP-SGD under secure aggregation)"
            )
        for clash in registry.clashes(kind):
            print(f"  note: {clash}")
        print()
    return 0
