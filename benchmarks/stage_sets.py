"""The ``--stages`` argument the probing benchmarks share: which encoder stages a probe reads."""

from __future__ import annotations

HELP = "comma-separated stage sets: 'auto' (stage 1 or all, chosen on validation), 'all', or stages joined by '+', e.g. auto,1,1+2"


def parse(text: str) -> list[list[int] | None]:
    """``"auto,1,1+2,all"`` -> ``[None, [1], [1, 2], [1, 2, 3, 4, 5]]`` (``None``: the probe's default readout).

    An argparse ``type``: its ValueError on anything else becomes a usage error naming the option.
    """
    return [None if s == "auto" else [1, 2, 3, 4, 5] if s == "all" else [int(i) for i in s.split("+")] for s in text.split(",") if s]


def label(stages: list[int] | None) -> str:
    """The name of a stage set in tables and ``name=value`` keys."""
    return "auto" if stages is None else "+".join(map(str, stages))
