"""What a `Probe` logs, declared once: `LogOptions`, and the argument checks shared by the API.

Each option is one dataclass field: its default, its type and its documentation live there, and
`Probe` and `ProbeCallback` take the options as keyword arguments (`**options`) that
`LogOptions.from_kwargs` validates. `document_options` writes the same fields into their
signatures and docstrings, so `help(tbprobe.Probe)` lists every option. A bad value is an error
at construction, with the received value and what was expected, never at step 10,000.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

DEFAULT_BUCKETS = 30
DEFAULT_HISTOGRAM_SAMPLE = 2**16
DEFAULT_MAX_IMAGE_SIDE = 1024


def _option(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class LogOptions:
    """How each probed output is logged; see `OPTION_DOCS` (one line per field).

    Raises:
        ValueError: a value out of range or of the wrong type.
    """

    buckets: int = _option(DEFAULT_BUCKETS, "histogram buckets per output.")
    histogram_sample: int | None = _option(
        DEFAULT_HISTOGRAM_SAMPLE,
        "most elements of one output bucketed for its histogram (a strided sample, counts "
        "scaled to the total; see `tbprobe.stats`); None buckets every one.",
    )
    zero_tol: float = _option(
        0.0, "`abs(x) <= zero_tol` counts as zero for sparsity and dead units."
    )
    images: bool = _option(True, "whether to log feature-map grids and heatmaps.")
    images_every: int = _option(
        1, "log images at every this many logs (the first log always has them)."
    )
    max_channels: int = _option(32, "feature-map channels shown per sample.")
    max_samples: int = _option(1, "samples shown in feature-map grids and rank-3 heatmaps.")
    cmap: str | None = _option("viridis", "matplotlib colormap name for images, or None for gray.")
    max_image_side: int = _option(
        DEFAULT_MAX_IMAGE_SIDE, "cap on an image's longer side, in pixels."
    )

    def __post_init__(self) -> None:
        for name in ("buckets", "max_channels", "max_samples", "max_image_side", "images_every"):
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
        check_cmap(self.cmap)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LogOptions:
        """Build from keyword arguments, naming the closest valid option for a misspelled one.

        Raises:
            TypeError: an unknown option.
            ValueError: a bad value.
        """
        names = option_names()
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(
                    f"Unknown probe option {key!r}.{hint} Valid options: {', '.join(names)}."
                )
        return cls(**kwargs)


def option_names() -> list[str]:
    """The names of the `LogOptions` fields, in declaration order."""
    return [f.name for f in dataclasses.fields(LogOptions)]


OPTION_DOCS = {f.name: f.metadata["doc"] for f in dataclasses.fields(LogOptions)}

_Class = TypeVar("_Class", bound=type)


def document_options(cls: _Class) -> _Class:
    """Write the `LogOptions` fields into the docstring and `__init__` signature of `cls`.

    The docstring's `{options}` line becomes one `name: doc` line per option (indented as the
    placeholder is), and `inspect.signature(cls)` shows each option as a keyword argument with
    its default in place of `**options`, so `help(cls)` lists every option.
    """
    init = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    parameters += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in dataclasses.fields(LogOptions)
    ]
    init.__signature__ = signature.replace(parameters=parameters)
    doc = cls.__doc__ or ""
    for line in doc.splitlines():
        if line.strip() == "{options}":
            indent = line[: len(line) - len(line.lstrip())]
            lines = [f"{indent}{name}: {text}" for name, text in OPTION_DOCS.items()]
            cls.__doc__ = doc.replace(line, "\n".join(lines))
    return cls


def check_cmap(cmap: Any) -> None:
    """Raise unless `cmap` is None or a matplotlib colormap name.

    Raises:
        ValueError: naming the value received and some valid names.
    """
    if cmap is None:
        return
    import matplotlib

    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        raise ValueError(
            f"Invalid value for argument `cmap`. Received: cmap={cmap!r}. Expected a matplotlib "
            "colormap name such as 'viridis', 'magma', 'coolwarm' or 'gray' (all names: "
            "list(matplotlib.colormaps)), or None for grayscale."
        )


def positive_int(name: str, value: Any) -> int:
    """`value` as an int if it is a positive integer, else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
            "Expected a positive integer."
        )
    return int(value)
