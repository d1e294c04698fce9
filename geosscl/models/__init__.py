"""Segmentation networks (encoder + decoder) and the heads SSCCL pretrains them with."""

from .heads import DenseHead, InstanceHead
from .network import DEFAULT_DENSE_STRIDE, SegmentationNetwork

__all__ = ["DEFAULT_DENSE_STRIDE", "DenseHead", "InstanceHead", "SegmentationNetwork"]
