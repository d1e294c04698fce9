"""Numeric precision of forward passes: ``--precision 32|bf16`` of every command that runs a network.

Training (``pretrain``, ``finetune``) hands it to Lightning; inference (``predict``,
``evaluate``, ``suggest``) wraps each forward pass in :func:`autocast`. Either way the weights stay
float32 and every output is cast to float32 before it is used.
"""

from __future__ import annotations

import platform

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
    if precision == "bf16" and not bf16_runs_faster(device):
        if _on_gpu(device):
            raise GeossclError("precision: bf16 requested but this GPU has no bfloat16 support; use --precision 32")
        raise GeossclError("precision: bf16 would run slower than float32 on this CPU (it has no AVX512-BF16 or AMX "
                           "bfloat16 arithmetic); use --precision 32")
    return precision


def bf16_runs_faster(device: str | torch.device) -> bool:
    """Whether ``device`` (as for :func:`check_precision`) runs bfloat16 faster than float32: where it does not,
    ``bf16`` is refused."""
    return torch.cuda.is_bf16_supported() if _on_gpu(device) else cpu_has_bfloat16()


def _on_gpu(device: str | torch.device) -> bool:
    kind = device.type if isinstance(device, torch.device) else device
    return kind in ("gpu", "cuda") or (kind == "auto" and torch.cuda.is_available())


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 convolutions in hardware, where ``bf16`` is faster than float32.

    Elsewhere it is slower, so much so that it is refused: a ResNet-18 U-Net's forward pass (8 tiles of 256 px, 2
    threads) took 0.35 s in bf16 against 0.7 s in float32 on a Xeon with AMX, 2.1 s against 1.05 s with oneDNN held to
    AVX-512 without its BF16 extension (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), and 92 s against 0.93 s held to AVX2, where
    PyTorch's bfloat16 convolutions leave oneDNN for a plain loop.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # oneDNN's own view, which ONEDNN_MAX_CPU_ISA lowers
            return False
    except (AttributeError, RuntimeError):  # no such check in this PyTorch build: judge by the CPU flags alone
        pass
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True  # ARM's bfloat16 instructions: not measured, not refused
    flags = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    known = [flag for flag in flags if flag is not None]
    return not known or any(flag() for flag in known)  # CPUID, whatever oneDNN is held to


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' context on ``device``: bfloat16 autocast for ``"bf16"``, plain float32 for ``"32"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
