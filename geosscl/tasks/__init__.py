"""Lightning tasks: SSCCL pretraining and few-label fine-tuning."""

from .finetune import SegmentationTask
from .pretrain import SSCCLTask

__all__ = ["SSCCLTask", "SegmentationTask"]
