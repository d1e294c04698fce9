"""Output shared by the benchmarks: the closing ``name=value`` lines that programs read."""

from __future__ import annotations

import re


def print_values(values: dict[str, float]) -> None:
    """One ``name=value`` line per item, names reduced to letters, digits and ``_`` (``.`` as ``p``)."""
    print()
    for key, value in values.items():
        print(f"{re.sub(r'[^0-9A-Za-z]+', '_', key.replace('.', 'p'))}={value:.2f}")
