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
    with pytest.raises(GeossclError, match="five U-Net decoder widths"):
        SegmentationNetwork(3, decoder_channels=[64, 32])


def test_small_network_and_half_precision_model_file(tmp_path):
    from geosscl.modelfile import ModelInfo, load_model, save_model

    torch.manual_seed(0)
    net = SegmentationNetwork(6, 7, encoder="mobilenet_v2", decoder_channels=[128, 64, 32, 16, 16]).eval()
    assert sum(p.numel() for p in net.parameters()) < 4_500_000  # ResNet-18 U-Net: 14.3 M
    x = torch.randn(1, 6, 64, 64)
    encoded, dense = net.features(x, 4)
    assert dense.shape == (1, net.dense_channels(4), 16, 16) and encoded.shape[1] == net.encoder_channels
    info = ModelInfo(arch="unet", encoder="mobilenet_v2", decoder_channels=[128, 64, 32, 16, 16], bands=list(range(1, 7)),
                     band_mean=[0.0] * 6, band_std=[1.0] * 6, class_names=list("abcdefg"),
                     class_colors=[[0, 0, 0]] * 7, res=[30.0, 30.0])
    save_model(tmp_path / "full.safetensors", net, info)
    save_model(tmp_path / "half.safetensors", net, info, half=True)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.55 * (tmp_path / "full.safetensors").stat().st_size
    loaded, loaded_info = load_model(tmp_path / "half.safetensors")
    assert loaded_info.decoder_channels == [128, 64, 32, 16, 16]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), atol=0.05, rtol=0.05)
