"""Lightning tasks: SSCCL pretraining."""

from .pretrain import SSCCLTask

__all__ = ["SSCCLTask"]
