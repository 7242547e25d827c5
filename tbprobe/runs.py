"""Run arguments, run discovery and run names, shared by `tbprobe launch` and `tbprobe report`.

A *run* is a folder written by tbprobe: it holds ``probe/`` (tbprobe's event files) and possibly
Keras's ``train/`` and ``validation/``. What counts as a run is a `RunLayout`: the launcher shows
what TensorBoard shows, any folder with event files in itself or in ``probe/``, ``train/`` or
``validation/`` (`TENSORBOARD_RUNS`); the report reads tbprobe's ``probe/`` folders only
(`PROBE_RUNS`), and takes a run's ``probe/`` folder for the run.

Both commands take the same arguments (a path, ``NAME=PATH`` or a mapping ``{name: path}``) and
name runs the same way: as TensorBoard names them through the launcher's folder of symlinks
(``name -> absolute path``), where TensorBoard adds ``/probe``, ``/train``, ...:

=====================================  =============================================
arguments                              run names
=====================================  =============================================
``runs/baseline`` (one run)            ``baseline``
``runs/`` (a folder of runs, alone)    ``baseline``, ``sweep/lr1`` (relative paths)
``base=runs/a lr=runs/b``              ``base``, ``lr``
``runs/a runs/b`` (unnamed)            ``a``, ``b`` (folder names)
``all=runs/`` or ``runs/ other=...``   ``all/baseline``, ... or ``runs/baseline``, ...
=====================================  =============================================

Example::

    >>> named_runs("base=runs/a", "runs/sweep")  # doctest: +SKIP
    [('base', PosixPath('runs/a')), ('sweep/lr1', PosixPath('runs/sweep/lr1'))]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbprobe.tags import PROBE_DIR

EVENT_FILE_MARKER = "tfevents"  # TensorBoard's own test: "tfevents" in the file name
RUN_FOLDERS = (PROBE_DIR, "train", "validation")
_FOUND_LISTED = 8  # entries of a folder without runs named in the error

# A run argument: a path, a "NAME=PATH" string, or a mapping {name: path}.
RunArgumentLike = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]


@dataclass(frozen=True)
class RunLayout:
    """What counts as a run, and how error messages describe it.

    Attributes:
        folders: The subfolders whose event files make a folder a run; ``""`` is the folder
            itself.
        expected: A sentence saying what a run path should be.
        missing: What a path without runs lacks, followed by the path in messages.
    """

    folders: tuple[str, ...]
    expected: str
    missing: str


TENSORBOARD_RUNS = RunLayout(
    folders=("", *RUN_FOLDERS),
    expected="Expected a run directory written by tbprobe (holding probe/) or a folder of runs.",
    missing="TensorBoard event files (events.out.tfevents.*) below",
)
PROBE_RUNS = RunLayout(
    folders=(PROBE_DIR,),
    expected=(
        f"Expected a run folder (one holding a '{PROBE_DIR}/' folder of event files, as "
        "tbprobe.Probe writes them) or a folder with such runs below it."
    ),
    missing="tbprobe data at or below",
)


@dataclass(frozen=True)
class RunArgument:
    """One checked run argument: a run, or a folder with runs below it.

    Attributes:
        name: The NAME given, else the folder's name; None for a folder of runs given alone
            without a name, whose runs are named by their paths relative to it.
        path: The folder as given, user-expanded; under `PROBE_RUNS` a run's ``probe/`` folder
            is replaced by its run.
        text: The argument as given, for messages.
    """

    name: str | None
    path: Path
    text: str

    def runs(self, layout: RunLayout) -> list[tuple[str, Path]]:
        """``(name, run folder)`` of every run at or below `path`, sorted by path.

        A run is named ``NAME/relative/path``: the argument's name, then the run's path
        relative to `path` (either part left out when empty).
        """
        named = []
        for run in iter_runs(self.path, layout):
            relative = run.relative_to(self.path).as_posix() if run != self.path else ""
            named.append(("/".join(part for part in (self.name, relative) if part), run))
        return named


def parse_run_arguments(*runs: RunArgumentLike, layout: RunLayout) -> list[RunArgument]:
    """Check run arguments and name them: the one parser of `tbprobe launch` and `report`.

    Args:
        *runs: Each a path (a run, or a folder with runs below it), a ``"NAME=PATH"`` string
            (split at the first ``=`` unless the whole text is an existing path) or a mapping
            ``{name: path}``.
        layout: What counts as a run.

    Returns:
        One `RunArgument` per path, in the order given.

    Raises:
        ValueError: No argument is given, a path does not exist, is not a local directory or
            has no run at or below it, a NAME is empty or holds '/', or two arguments get the
            same name.
        TypeError: An argument is neither a path, a string nor a mapping.
    """
    entries: list[tuple[str | None, str, str]] = []  # (name or None, path, argument as given)
    for item in runs:
        if isinstance(item, Mapping):
            entries += [(_check_name_type(n), os.fspath(p), f"{n}={p}") for n, p in item.items()]
        elif isinstance(item, (str, os.PathLike)):
            entries.append(_split_run_argument(os.fspath(item)))
        else:
            raise TypeError(
                f"Invalid run argument. Received: {item!r} of type {type(item).__name__}. "
                "Expected a path, a 'NAME=PATH' string or a mapping {name: path}."
            )
    if not entries:
        raise ValueError("No run given. Pass a run directory, a folder of runs or NAME=PATH.")
    arguments = []
    for name, path, text in entries:
        if name is not None:
            _check_name(name, text)
        folder = _check_run_path(path, text, layout)
        if next(iter_runs(folder, layout), None) is None:
            raise _no_runs_error(folder, _given(path, text), layout)
        if name is None and (len(entries) > 1 or is_run(folder, layout)):
            name = folder.resolve().name
        arguments.append(RunArgument(name, folder, text))
    check_distinct_names((a.name, a.text) for a in arguments if a.name is not None)
    return arguments


def named_runs(*runs: RunArgumentLike, layout: RunLayout = PROBE_RUNS) -> list[tuple[str, Path]]:
    """Every run the arguments point at, named as TensorBoard shows them through the launcher.

    Args:
        *runs: As for `parse_run_arguments`.
        layout: What counts as a run.

    Returns:
        ``(name, run folder)`` pairs in the order given, runs below a folder sorted by path.

    Raises:
        ValueError, TypeError: As described in `parse_run_arguments`.
    """
    return [
        pair
        for argument in parse_run_arguments(*runs, layout=layout)
        for pair in argument.runs(layout)
    ]


@dataclass(frozen=True)
class LogdirPlan:
    """What the launcher gives TensorBoard as ``--logdir``: a folder of runs, or named links.

    Attributes:
        folder: The absolute folder of runs given alone and without a name, served as it is (so
            that runs appearing in it later are shown too); None when `links` are given.
        links: Run name -> absolute run directory, to be linked under those names by
            `link_runs`; empty when `folder` is given.
    """

    folder: Path | None
    links: dict[str, Path]


def resolve_logdir(*runs: RunArgumentLike) -> LogdirPlan:
    """Decide what the launcher points TensorBoard at (runs as in `TENSORBOARD_RUNS`).

    Returns:
        A `LogdirPlan`: the folder when a single folder of runs is given without a name, else
        the runs to link by name.

    Raises:
        ValueError, TypeError: As described in `parse_run_arguments`.
    """
    arguments = parse_run_arguments(*runs, layout=TENSORBOARD_RUNS)
    links = {a.name: a.path.resolve() for a in arguments if a.name is not None}
    if links:
        return LogdirPlan(folder=None, links=links)
    return LogdirPlan(folder=arguments[0].path.resolve(), links={})


def link_runs(logdir: Path, links: Mapping[str, Path]) -> Path:
    """Create `logdir` holding one symlink ``name -> run directory`` per entry of `links`.

    TensorBoard's two loaders follow them (the Rust data server of ``--load_fast`` and the
    Python loader; checked with TensorBoard 2.21 and tensorboard-data-server 0.7.2), which names
    runs without TensorBoard's discouraged ``--logdir_spec``.

    Returns:
        `logdir`.
    """
    logdir.mkdir()
    for name, target in links.items():
        (logdir / name).symlink_to(target, target_is_directory=True)
    return logdir


def find_runs(path: str | os.PathLike[str], layout: RunLayout = PROBE_RUNS) -> list[Path]:
    """The run folders at or below `path`, depth first and sorted, following symlinks.

    `path` may be a run, a parent of runs, or (under `PROBE_RUNS`) a run's ``probe/`` folder,
    meaning its run.

    Raises:
        ValueError: `path` does not exist, is not a directory, or no run is at or below it.
    """
    text = os.fspath(path)
    folder = _check_run_path(text, text, layout)
    runs = list(iter_runs(folder, layout))
    if not runs:
        raise _no_runs_error(folder, _given(text, text), layout)
    return runs


def iter_runs(root: Path, layout: RunLayout) -> Iterator[Path]:
    """Yield the run folders at or below `root`, depth first in sorted order.

    Symlinks are followed; each real folder is visited once, so that symlink loops end.
    """
    seen: set[str] = set()
    for folder, subfolders, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders.sort()
        if is_run(Path(folder), layout):
            yield Path(folder)


def run_of(folder: Path, layout: RunLayout) -> Path:
    """The run that `folder` is an event folder of, else `folder` itself.

    Under `PROBE_RUNS`, ``runs/a/probe`` (holding event files, not itself a run) means the run
    ``runs/a``. Under `TENSORBOARD_RUNS` a folder with event files is a run of its own.
    """
    if folder.name in layout.folders and event_files(folder) and not is_run(folder, layout):
        return folder.parent
    return folder


def is_run(folder: Path, layout: RunLayout) -> bool:
    """Whether `folder` holds event files in one of `layout.folders`."""
    return any(event_files(folder / sub) for sub in layout.folders)


def event_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The event files directly in `folder`, oldest first (by the timestamp, process id and
    writer number in their name)."""
    files = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        files = [Path(e.path) for e in entries if EVENT_FILE_MARKER in e.name and e.is_file()]
    return sorted(files, key=_file_order)


def check_distinct_names(named: Iterable[tuple[str, str]]) -> None:
    """Raise if a name comes twice in `(name, where it comes from)` pairs.

    Raises:
        ValueError: Naming the repeated name and the second place it comes from.
    """
    seen: set[str] = set()
    for name, source in named:
        if name in seen:
            raise ValueError(
                f"Run name {name!r} is given twice (again by {source!r}). Expected distinct "
                f"names; name the runs explicitly, e.g. {name}_1=... {name}_2=..."
            )
        seen.add(name)


def _file_order(path: Path) -> tuple[int, int, int, str]:
    # events.out.tfevents.<unix seconds>.<host>.<pid>.<n>.v2, where <n> numbers the writers of
    # a process in creation order: two fits within one second differ only there, and as text
    # writer 10 would sort before writer 9. (The host name may hold dots itself.)
    parts = path.name.split(".")
    stamp = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    pid, writer = 0, 0
    if len(parts) > 7 and parts[-1] == "v2" and parts[-3].isdigit() and parts[-2].isdigit():
        pid, writer = int(parts[-3]), int(parts[-2])
    return stamp, pid, writer, path.name


def _check_name_type(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"Invalid run name. Received: {name!r}. Expected a string.")
    return name


def _split_run_argument(text: str) -> tuple[str | None, str, str]:
    """``"name=path"`` -> (name, path, text) unless `text` is itself an existing path."""
    if "=" in text and not os.path.exists(text):
        name, _, path = text.partition("=")
        return name, path, text
    return None, text, text


def _check_name(name: str, argument: str) -> None:
    if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"Invalid run name {name!r} in {argument!r}. Expected NAME=PATH with a non-empty "
            "NAME without '/' (it becomes a folder name), e.g. baseline=runs/a."
        )


def _given(path: str, argument: str) -> str:
    return repr(path) if path == argument else f"{path!r} (from {argument!r})"


def _check_run_path(path: str, argument: str, layout: RunLayout) -> Path:
    """The folder `path` names, user-expanded, or the run it belongs to (see `RunArgument`)."""
    given = _given(path, argument)
    if "://" in path:
        raise ValueError(
            f"Run path {given} is not a local directory; tbprobe reads runs from local folders "
            f"and names them with symlinks. Start `tensorboard --logdir {path}` for remote runs."
        )
    if not path:
        raise ValueError(f"Empty run path in {argument!r}. {layout.expected}")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ValueError(f"Run path {given} does not exist. {layout.expected}")
    if not folder.is_dir():
        raise ValueError(f"Run path {given} is not a directory. {layout.expected}")
    if not folder.resolve().name:
        raise ValueError(f"Run path {given} has no folder name; give one as NAME={path}.")
    return run_of(folder, layout)


def _no_runs_error(folder: Path, given: str, layout: RunLayout) -> ValueError:
    found = sorted(entry.name for entry in folder.iterdir())[:_FOUND_LISTED]
    return ValueError(
        f"No {layout.missing} {given}. {layout.expected} Found there: "
        f"{', '.join(found) or 'nothing'}. Has the training logged anything yet?"
    )
