"""Augmentations for view pairs, applied to the batch on the training device.

Geometric augmentations go through Kornia's :class:`~kornia.augmentation.AugmentationSequential`,
which records the 3×3 matrix of what it did to each image (in pixel coordinates,
pixel centres at integers); :mod:`geosscl.correspondence` maps map points through
that matrix, so correspondences survive flips, rotations and affine warps exactly.
"""

from __future__ import annotations

import torch
import kornia.augmentation as K
from torch import Tensor, nn


class BandStats(nn.Module):
    """Per-band normalisation ``(x - mean) / std`` with statistics of the mosaic.

    Args:
        mean: per-band means, ``C``.
        std: per-band standard deviations, ``C``.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Normalise ``B×C×H×W`` images with NaN for nodata.

        Returns:
            ``(images, valid)``: normalised images with nodata set to 0 (the band
            mean), and a ``B×1×H×W`` float mask, 1 where every band is valid.
        """
        valid = ~torch.isnan(images).any(dim=1, keepdim=True)
        images = ((images - self.mean) / self.std).nan_to_num(0.0)
        return images, valid.to(images.dtype)


class BandJitter(nn.Module):
    """Random brightness and contrast of each image, for any band count.

    Kornia's colour jitter is defined for RGB (or grey) images only; multispectral
    imagery needs the same idea per band. Works on normalised images: contrast
    scales each band about its mean, brightness shifts it (in units of its std).

    Args:
        brightness: shifts are drawn from ``U(-brightness, brightness)``.
        contrast: factors are drawn from ``U(1 - contrast, 1 + contrast)``.
        p: probability of jittering an image.
        per_band: draw each band's shift and factor on its own (as colour jitter
            does), which changes the spectral signature; False draws one shift and
            one factor per image and applies them to all its bands alike.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8, per_band: bool = True) -> None:
        super().__init__()
        self.brightness, self.contrast, self.p, self.per_band = brightness, contrast, p, per_band

    def forward(self, images: Tensor) -> Tensor:
        b, c = images.shape[:2]
        shape, kw = (b, c if self.per_band else 1, 1, 1), {"device": images.device, "dtype": images.dtype}
        apply = (torch.rand(b, 1, 1, 1, device=images.device) < self.p).to(images.dtype)
        factor = 1.0 + apply * (torch.rand(shape, **kw) * 2 - 1) * self.contrast
        shift = apply * (torch.rand(shape, **kw) * 2 - 1) * self.brightness
        mean = images.mean(dim=(2, 3), keepdim=True)
        return (images - mean) * factor + mean + shift


#: Choices of :class:`PairAugmentation`'s ``jitter``.
JITTERS = ("band", "image", "none")


class PairAugmentation(nn.Module):
    """Photometric then geometric augmentation of one view of each pair.

    Args:
        rgb: whether the first three bands are red, green, blue (enables grayscale).
        jitter: brightness/contrast jitter drawn per ``"band"``, once per ``"image"``
            for all its bands alike, or ``"none"``.
        flips: random horizontal and vertical flips.
        rotate90: random multiples of 90°.
        affine_degrees: range of a small random rotation (0 disables the affine warp).
        affine_scale: range of its scale factor.
        blur: probability of a Gaussian blur.
        noise: standard deviation of additive Gaussian noise (in normalised units).

    Call it on ``B×C×H×W`` normalised images and a ``B×1×H×W`` validity mask; it
    returns the augmented images, the warped mask (0 where the warp brought in
    pixels from outside) and ``B×3×3`` matrices mapping input pixel coordinates to
    output pixel coordinates (pixel centres at integers, Kornia's convention).
    """

    def __init__(
        self,
        rgb: bool = False,
        jitter: str = "band",
        flips: bool = True,
        rotate90: bool = True,
        affine_degrees: float = 10.0,
        affine_scale: tuple[float, float] = (0.9, 1.1),
        blur: float = 0.5,
        noise: float = 0.05,
    ) -> None:
        super().__init__()
        if jitter not in JITTERS:
            raise ValueError(f"jitter: {jitter!r} is not one of {', '.join(JITTERS)}")
        photometric: list[nn.Module] = [] if jitter == "none" else [BandJitter(per_band=jitter == "band")]
        if rgb:
            photometric.append(K.RandomGrayscale(p=0.2))
        if blur > 0:
            photometric.append(K.RandomGaussianBlur((5, 5), (0.1, 1.5), p=blur))
        if noise > 0:
            photometric.append(K.RandomGaussianNoise(std=noise, p=0.5))
        self.photometric = nn.Sequential(*photometric)
        geometric: list[nn.Module] = []
        if flips:
            geometric += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
        if rotate90:
            geometric.append(K.RandomRotation90(times=(-1, 2), p=1.0, align_corners=True))
        if affine_degrees > 0:
            geometric.append(
                K.RandomAffine(degrees=affine_degrees, scale=affine_scale, p=0.5, align_corners=True, padding_mode="zeros")
            )
        self.geometric = K.AugmentationSequential(*geometric) if geometric else None

    def forward(self, images: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        channels = images.shape[1]
        images = self.photometric(images) if self.photometric else images
        batch = images.shape[0]
        if self.geometric is None:
            eye = torch.eye(3, device=images.device, dtype=images.dtype).expand(batch, 3, 3)
            return images, valid, eye
        # The mask rides along as an extra channel, so it is warped exactly like the image.
        warped = self.geometric(torch.cat([images, valid], dim=1))
        matrix = self.geometric.transform_matrix
        if matrix is None:
            matrix = torch.eye(3, device=images.device, dtype=images.dtype).expand(batch, 3, 3)
        # Strict: a pixel that took even a sliver of padding is not valid.
        return warped[:, :channels], (warped[:, channels:] > 1 - 1e-5).to(images.dtype), matrix
