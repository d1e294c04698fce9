"""The segmentation network's partial decoder and its errors."""

from __future__ import annotations

import pytest
import torch

from geosscl import GeossclError
from geosscl.models import SegmentationNetwork


def test_full_stride_decoder_equals_smp():
    torch.manual_seed(0)
    net = SegmentationNetwork(4).eval()
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        features = net.encode(x)
        torch.testing.assert_close(net.decode(features, 1), net.net.decoder(features))


@pytest.mark.parametrize("arch, stride, channels", [("unet", 4, 64), ("unet", 16, 256), ("deeplabv3plus", 4, 256)])
def test_dense_features_at_stride(arch, stride, channels):
    net = SegmentationNetwork(6, arch=arch)
    encoded, dense = net.features(torch.randn(2, 6, 64, 64), stride)
    assert dense.shape == (2, channels, 64 // stride, 64 // stride)
    assert net.dense_channels(stride) == channels
    assert encoded.shape[1] == net.encoder_channels


def test_bad_settings():
    with pytest.raises(GeossclError, match="dense_stride: 2 is not one of"):
        SegmentationNetwork(3, arch="deeplabv3plus").decode([], 2)
    with pytest.raises(GeossclError, match="arch: 'fpn' is not one of"):
        SegmentationNetwork(3, arch="fpn")
