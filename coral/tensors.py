"""The device every stage runs on and the image conversions between storage (uint8) and networks."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The first CUDA device where there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1], the range the UNet and the classifier see."""
    return images.float() / 127.5 - 1.0


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] (clamped) -> uint8 in [0, 255], rounded to the nearest value."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
