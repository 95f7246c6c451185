"""Batched data augmentation on the training device: crop, flip, shift, rotate, resized crop, brightness,
contrast, noise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def is_active(cfg: AugmentConfig) -> bool:
    return on_pixels(cfg) or bool(cfg.noise)


def on_pixels(cfg: AugmentConfig) -> bool:
    """Whether pixels() changes a batch under `cfg`: the steps that work on [0, 1] pixel values, before
    normalisation (noise alone is added after it)."""
    return is_geometric(cfg) or bool(cfg.brightness or cfg.contrast)


def pixels(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, white: float = 1.0) -> torch.Tensor:
    """geometric(), then photometric(), on x: (B, C, H, W) pixel values in [0, white] (Splits.white)."""
    if is_geometric(cfg):
        x = geometric(x, cfg, gen)
    if cfg.brightness or cfg.contrast:
        x = photometric(x, cfg, gen, white)
    return x


def is_geometric(cfg: AugmentConfig) -> bool:
    """Whether geometric() moves pixels under `cfg` (noise alone does not)."""
    return bool(cfg.crop_padding or cfg.hflip or cfg.shift or cfg.rotate or cfg.resized_crop)


def geometric(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crop-with-padding, flip, shift, rotation and resized crop of a batch, as one affine resampling.

    x: (B, C, H, W) float pixel values in [0, 1]; the area moved in from outside is 0 (black),
    as with zero padding. Hand-written because torchvision (not a dependency) draws one set of
    parameters per call, not one per example, and runs per sample on the host.
    """
    b, _, h, w = x.shape
    device, dtype = x.device, x.dtype

    def uniform(low: float, high: float) -> torch.Tensor:  # (B,) on the batch's device
        return torch.rand(b, generator=gen, device=gen.device).to(device, dtype) * (high - low) + low

    # Translation in pixels: integer offsets for crop-with-padding, continuous for `shift`.
    tx = torch.zeros(b, device=device, dtype=dtype)
    ty = torch.zeros(b, device=device, dtype=dtype)
    p = cfg.crop_padding
    if p:
        tx += torch.randint(-p, p + 1, (b,), generator=gen, device=gen.device).to(device, dtype)
        ty += torch.randint(-p, p + 1, (b,), generator=gen, device=gen.device).to(device, dtype)
    if cfg.shift:
        tx += uniform(-cfg.shift, cfg.shift) * w
        ty += uniform(-cfg.shift, cfg.shift) * h
    # Resized crop: the crop's side as a fraction of the image's (sqrt of the area fraction) and its
    # centre, in normalised coordinates. The centre stays within (1 - side)(1 - 1/W) of the middle,
    # so the outermost output pixels sample no further out than the outermost input pixel centres
    # (align_corners=False): a crop never blends in the zero padding.
    side = torch.ones_like(tx)
    cx, cy = torch.zeros_like(tx), torch.zeros_like(tx)
    if cfg.resized_crop:
        side = uniform(cfg.resized_crop, 1.0).sqrt()
        cx = uniform(-1.0, 1.0) * (1 - side) * (1 - 1 / w)
        cy = uniform(-1.0, 1.0) * (1 - side) * (1 - 1 / h)
    angle = uniform(-cfg.rotate, cfg.rotate) * (math.pi / 180) if cfg.rotate else torch.zeros_like(tx)
    flip = torch.ones_like(tx)
    if cfg.hflip:
        flip = torch.where(torch.rand(b, generator=gen, device=gen.device).to(device) < 0.5, -1.0, 1.0).to(dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input coordinates, both normalised to [-1, 1]: (B, 2, 3).
    theta = torch.stack([
        torch.stack([flip * cos * side, -sin * h / w * side, 2 * tx / w + cx], dim=1),
        torch.stack([flip * sin * w / h * side, cos * side, 2 * ty / h + cy], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Whole-pixel moves and flips only: nearest sampling copies pixels exactly.
    exact = not cfg.shift and not cfg.rotate and not cfg.resized_crop
    return F.grid_sample(x, grid, mode="nearest" if exact else "bilinear", padding_mode="zeros",
                         align_corners=False)


def photometric(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, white: float = 1.0) -> torch.Tensor:
    """Random brightness, then contrast, per image, as torchvision's ColorJitter defines them.

    x: (B, C, H, W) pixel values in [0, white] (1 for torchvision's float images; 16 for digits'
    0..16) -> the same shape, clamped to [0, white]. Both operations scale with the pixels, so only
    the clamp needs to know where white is. Brightness multiplies
    the pixels by b ~ U[1 - cfg.brightness, 1 + cfg.brightness]; contrast blends each image with its
    mean grey (the mean of its luminance, 0.299 R + 0.587 G + 0.114 B, for colour) by
    c ~ U[1 - cfg.contrast, 1 + cfg.contrast]. Hand-written for the reason geometric() is.
    """
    b = x.shape[0]

    def factor(spread: float) -> torch.Tensor:  # (B, 1, 1, 1) on the batch's device
        u = torch.rand(b, generator=gen, device=gen.device).to(x.device, x.dtype)
        return (1 + (2 * u - 1) * spread).view(b, 1, 1, 1)

    if cfg.brightness:
        x = (x * factor(cfg.brightness)).clamp(0, white)
    if cfg.contrast:
        grey = x if x.shape[1] != 3 else (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)                    # (B, 1, 1, 1)
        x = ((x - mean) * factor(cfg.contrast) + mean).clamp(0, white)
    return x


def add_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise of `std` in normalised units; x: any shape."""
    noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=torch.float32)
    return x + noise.to(x.device, x.dtype) * std
