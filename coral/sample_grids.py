"""Sample grids: one row per class, head (class 0) at the top, tail at the bottom.

numpy + PIL only, so figures and previews never need torch.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from coral.io import atomic_path

PAD_VALUE = 128      # mid-gray padding, visible against both black and white backgrounds
MIN_CELL_PIXELS = 32  # automatic upscaling makes every cell at least this tall
MAX_ROWS = 20         # at most this many classes are shown in one grid


def shown_classes(num_classes: int, max_rows: int = MAX_ROWS) -> list[int]:
    """The classes a grid shows: all of them, or `max_rows` evenly spaced from head (0) to tail (C-1)."""
    if num_classes <= max_rows:
        return list(range(num_classes))
    return sorted({int(round(c)) for c in np.linspace(0, num_classes - 1, max_rows)})


def image_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_row: int,
               class_names: Sequence[str] | None = None, scale: int | None = None,
               max_rows: int = MAX_ROWS) -> np.ndarray:
    """Arrange images into a class-by-row grid.

    images: uint8 (N, C, H, W) with C = 1 or 3; labels: int (N,) in [0, num_classes).
    Row r holds the first `per_row` images (in array order) of the r-th shown class; classes are
    shown in label order, class 0 (the head) on top. With more than `max_rows` classes (e.g. 100 or
    1000) only `max_rows` classes evenly spaced from head to tail are shown (see `shown_classes`).
    Each image is upscaled by `scale` with nearest neighbour (None: the smallest integer factor that
    makes a cell at least 32 pixels tall) and cells are separated by 1 pixel of gray (128).
    Missing images (a class with fewer than `per_row`) leave gray cells. With `class_names`, a
    left margin holds each row's class name.

    Returns uint8 (grid_H, grid_W, C).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 (N, C, H, W) with C in (1, 3), "
                         f"got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels: expected shape ({len(images)},), got {labels.shape}")
    if per_row < 1:
        raise ValueError(f"per_row: must be >= 1, got {per_row}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names, got {len(class_names)}")
    _, channels, height, width = images.shape
    if scale is None:
        scale = max(1, math.ceil(MIN_CELL_PIXELS / height))
    if scale < 1:
        raise ValueError(f"scale: must be >= 1 or None, got {scale}")
    cell_h, cell_w = height * scale, width * scale

    rows = shown_classes(num_classes, max_rows)
    grid = np.full((len(rows) * (cell_h + 1) + 1, per_row * (cell_w + 1) + 1, channels), PAD_VALUE, np.uint8)
    for r, c in enumerate(rows):
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_row]):
            cell = images[i].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = 1 + r * (cell_h + 1), 1 + j * (cell_w + 1)
            grid[top:top + cell_h, left:left + cell_w] = cell
    if class_names is not None:
        grid = _add_row_names(grid, [class_names[c] for c in rows], cell_h)
    return grid


def _add_row_names(grid: np.ndarray, names: list[str], cell_h: int) -> np.ndarray:
    """Prepend a white margin with one name per grid row, vertically centred on the row."""
    font = ImageFont.load_default()
    margin = max(int(font.getlength(name)) for name in names) + 6
    mode = "L" if grid.shape[2] == 1 else "RGB"
    canvas = Image.new(mode, (margin + grid.shape[1], grid.shape[0]), 255 if mode == "L" else (255, 255, 255))
    canvas.paste(Image.fromarray(grid.squeeze(2) if mode == "L" else grid, mode), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        y = 1 + r * (cell_h + 1) + (cell_h - (bottom - top)) / 2 - top
        draw.text((3, y), name, fill=0 if mode == "L" else (0, 0, 0), font=font)
    array = np.asarray(canvas)
    return array[:, :, None] if mode == "L" else array


def save_grid_png(images: np.ndarray, labels: np.ndarray, num_classes: int, path: str | os.PathLike,
                  per_row: int = 10, class_names: Sequence[str] | None = None) -> None:
    """Write `image_grid(images, labels, num_classes, per_row, class_names)` as a PNG, atomically."""
    grid = image_grid(images, labels, num_classes, per_row, class_names)
    picture = Image.fromarray(grid.squeeze(2) if grid.shape[2] == 1 else grid)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
