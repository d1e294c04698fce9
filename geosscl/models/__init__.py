"""Segmentation networks (encoder + decoder) and the heads SSCCL pretrains them with."""

from .heads import DenseHead, InstanceHead
from .network import DEFAULT_DENSE_STRIDE, HYPERCOLUMN, HypercolumnClassifier, SegmentationNetwork

__all__ = ["DEFAULT_DENSE_STRIDE", "HYPERCOLUMN", "DenseHead", "HypercolumnClassifier", "InstanceHead", "SegmentationNetwork"]
