"""Numeric precision of forward passes: ``--precision 32|bf16`` of every command that runs a network.

Training (``pretrain``, ``finetune``) hands it to Lightning; inference (``predict``,
``evaluate``) wraps each forward pass in :func:`autocast`. Either way the weights stay
float32 and every output is cast to float32 before it is used.
"""

from __future__ import annotations

import torch

from .errors import GeossclError

#: ``--precision`` → Lightning's name. No float16: it needs loss scaling, where bfloat16 keeps float32's range.
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}


def check_precision(precision: str | int, device: str | torch.device) -> str:
    """``precision`` as ``--precision`` spells it (``32`` from a YAML file is a number); refuse, before
    anything is written, one ``device`` cannot run.

    Args:
        precision: ``"32"`` or ``"bf16"``.
        device: where the forward passes run: ``"cpu"``, ``"gpu"`` / ``"cuda"`` (Lightning's and torch's names),
            ``"auto"`` (CUDA when present) or a :class:`torch.device`.
    """
    precision = str(precision)
    if precision not in LIGHTNING_PRECISION:
        raise GeossclError(f"precision: {precision!r} is not one of {', '.join(LIGHTNING_PRECISION)}")
    kind = device.type if isinstance(device, torch.device) else device
    on_gpu = kind in ("gpu", "cuda") or (kind == "auto" and torch.cuda.is_available())
    if precision == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise GeossclError("precision: bf16 requested but this GPU has no bfloat16 support; use --precision 32")
    return precision


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' context on ``device``: bfloat16 autocast for ``"bf16"``, plain float32 for ``"32"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
