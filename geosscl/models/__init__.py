"""Segmentation networks (encoder + decoder) and the heads SSCCL pretrains them with."""

from .heads import DenseHead, InstanceHead
from .network import SegmentationNetwork

__all__ = ["DenseHead", "InstanceHead", "SegmentationNetwork"]
