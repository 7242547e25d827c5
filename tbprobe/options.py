"""What a `Probe` logs, validated once: `LogOptions` and the argument checks shared by the API.

`Probe` and `ProbeCallback` both build a `LogOptions`, so that a bad value is an error at
construction, with the received value and what was expected, never at step 10,000.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BUCKETS = 30
DEFAULT_HISTOGRAM_SAMPLE = 2**16
DEFAULT_MAX_IMAGE_SIDE = 1024


@dataclass(frozen=True)
class LogOptions:
    """How each probed output is logged.

    Attributes:
        buckets: histogram buckets per output.
        max_channels: feature-map channels shown per sample.
        max_samples: samples shown in feature-map grids and rank-3 heatmaps.
        cmap: matplotlib colormap name for images, or None for grayscale.
        zero_tol: `abs(x) <= zero_tol` counts as zero for sparsity and dead units.
        images: whether to log feature-map grids and heatmaps.
        max_image_side: cap on an image's longer side, in pixels.
        histogram_sample: most elements of one output bucketed for its histogram (a strided
            sample, counts scaled to the total; see `tbprobe.stats`); None buckets every one.

    Raises:
        ValueError: a value out of range or of the wrong type.
    """

    buckets: int = DEFAULT_BUCKETS
    max_channels: int = 32
    max_samples: int = 1
    cmap: str | None = "viridis"
    zero_tol: float = 0.0
    images: bool = True
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE

    def __post_init__(self) -> None:
        for name in ("buckets", "max_channels", "max_samples", "max_image_side"):
            positive_int(name, getattr(self, name))
        if self.histogram_sample is not None:
            positive_int("histogram_sample", self.histogram_sample)
        if (
            not isinstance(self.zero_tol, (int, float))
            or isinstance(self.zero_tol, bool)
            or not (self.zero_tol >= 0)
        ):
            raise ValueError(
                f"Invalid value for argument `zero_tol`. Received: zero_tol={self.zero_tol!r}. "
                "Expected a non-negative number."
            )
        if not isinstance(self.images, bool):
            raise ValueError(
                f"Invalid value for argument `images`. Received: images={self.images!r}. "
                "Expected True or False."
            )
        if self.cmap is not None and not isinstance(self.cmap, str):
            raise ValueError(
                f"Invalid value for argument `cmap`. Received: cmap={self.cmap!r}. Expected a "
                "matplotlib colormap name such as 'viridis', or None for grayscale."
            )
        from tbprobe.images import colormap_palette

        object.__setattr__(self, "palette", colormap_palette(self.cmap))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LogOptions:
        """Build from keyword arguments, naming the closest valid option for a misspelled one.

        Raises:
            TypeError: an unknown option.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(
                    f"Unknown probe option {key!r}.{hint} Valid options: {', '.join(names)}."
                )
        return cls(**kwargs)


def positive_int(name: str, value: Any) -> int:
    """`value` as an int if it is a positive integer, else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
            "Expected a positive integer."
        )
    return int(value)
