"""The ``--stages`` argument the probing benchmarks share: which encoder stages a probe reads."""

from __future__ import annotations

HELP = "comma-separated stage sets: 'auto' (stage 1 or all, chosen on validation), 'all', or stages joined by '+', e.g. auto,1,1+2"


def parse(text: str) -> list[list[int] | str]:
    """``"auto,1,1+2,all"`` -> ``["auto", [1], [1, 2], [1, 2, 3, 4, 5]]`` (``"auto"``: stage 1 or all, chosen on validation).

    An argparse ``type``: its ValueError on anything else becomes a usage error naming the option.
    """
    return ["auto" if s == "auto" else [1, 2, 3, 4, 5] if s == "all" else [int(i) for i in s.split("+")] for s in text.split(",") if s]


def label(stages: list[int] | str) -> str:
    """The name of a stage set in tables and ``name=value`` keys."""
    return stages if isinstance(stages, str) else "+".join(map(str, stages))
