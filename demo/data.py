"""A generated image-classification task: no download, the same data on every machine.

Each 32x32 RGB image holds one shape (disc, square, cross or ring) of a random color, at a
random position and size, over noise; the label is the shape.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("disc", "square", "cross", "ring")
IMAGE_SIZE = 32


def make_shapes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` images `[count, 32, 32, 3]` float32 in [0, 1] and labels `[count]` int32."""
    rng = np.random.default_rng(seed)
    size = IMAGE_SIZE
    rows, cols = np.mgrid[0:size, 0:size]
    labels = rng.integers(0, len(CLASSES), count).astype(np.int32)
    images = rng.normal(0.0, 0.15, (count, size, size, 3)).astype(np.float32)
    for i, label in enumerate(labels):
        radius = rng.uniform(5, 10)
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        dy, dx = np.abs(rows - cy), np.abs(cols - cx)
        distance = np.hypot(dy, dx)
        if CLASSES[label] == "disc":
            mask = distance <= radius
        elif CLASSES[label] == "square":
            mask = np.maximum(dy, dx) <= radius * 0.8
        elif CLASSES[label] == "cross":
            mask = (np.minimum(dy, dx) <= radius * 0.25) & (np.maximum(dy, dx) <= radius)
        else:
            mask = (distance <= radius) & (distance >= radius * 0.6)
        color = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        images[i][mask] += color
    return np.clip(images, 0.0, 1.0), labels
