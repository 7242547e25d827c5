"""The tbprobe tab of TensorBoard: a dynamic plugin found through the `tensorboard_plugins` entry
point (``tbprobe = "tbprobe.dashboard.plugin:TbprobePlugin"`` in pyproject.toml).

TensorBoard loads ``static/index.js`` (an ES module, no build step) in an iframe whose base URL
is ``data/plugin/tbprobe/``; the module fetches the JSON routes below, relative to that base.
Every route answers JSON; a bad request gets ``{"error": message}`` with status 400 (missing or
malformed argument) or 404 (unknown run, tag or blob), never a 500.

Routes (runs are TensorBoard run names such as ``baseline/probe``; ``run`` may repeat):

* ``runs``: ``{"runs": {run: {"layers", "metrics", "histograms", "images", "health"}},
  "metrics": [name]}``, see `data.probe_runs`.
* ``overview?metric=M&run=R...``: ``{"metric": M, "runs": {run: {"layers", "steps",
  "values", "missing"}}}``, see `overview.overview`; without ``metric`` the first metric
  logged, without ``run`` every tbprobe run (what the page shows first).
* ``layer?tag=T&run=R...``: ``{"tag": T, "runs": {run: {"histograms", "scalars",
  "images"}}}``, see `views.layer_view`; image blob keys are read through ``blob``.
* ``blob?key=K``: the image bytes (PNG) of a blob key from ``layer``.
* ``findings?run=R...``: ``{"runs": {run: {"step", "text", "rows"}}}``, see `views.findings`.
* ``static/*``: the frontend's files.
"""

from __future__ import annotations

import contextlib
import mimetypes
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard import context as tb_context
from tensorboard import errors as tb_errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tbprobe.dashboard import PLUGIN_NAME, data, overview, views
from tbprobe.dashboard.cache import VersionedCache

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
_IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


class BadRequest(ValueError):
    """A missing or malformed query argument (HTTP 400)."""


class TbprobePlugin(base_plugin.TBPlugin):
    """TensorBoard plugin serving the tbprobe dashboard (overview, layer view, findings).

    Example:
        Installed with tbprobe, it is listed by any TensorBoard::

            $ tensorboard --logdir runs/   # then open http://localhost:6006/#tbprobe
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._provider = context.data_provider
        self._downsample = {
            plugin: count
            for plugin, count in (context.sampling_hints or {}).items()
            if count is not None
        }
        self._cache = VersionedCache()
        self._warming: threading.Thread | None = None

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/runs": self._route(self._runs),
            "/overview": self._route(self._overview),
            "/layer": self._route(self._layer),
            "/findings": self._route(self._findings),
            "/blob": self._serve_blob,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        """Whether some run holds tbprobe data (the plugin listing calls it without a request).

        When it does, the overview of the first metric is computed in the background: the
        listing comes when TensorBoard's page loads, seconds before the tab asks for it.
        """
        if self._provider is None:
            return False
        source = self._default_source()
        active = data.has_probe_data(source)
        if active and (self._warming is None or not self._warming.is_alive()):
            self._warming = threading.Thread(
                target=self._warm, args=(source,), name="tbprobe-warm", daemon=True
            )
            self._warming.start()
        return active

    def _default_source(self) -> data.Source:
        """The data of the default experiment, outside any request (as the listing sees it)."""
        context = tb_context.RequestContext()
        return data.Source(self._provider, context, "", self._downsample, self._cache)

    def _warm(self, source: data.Source) -> None:
        with contextlib.suppress(data.NotFound):  # no metric logged yet
            overview.overview(source, None, None)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="tbprobe")

    def _runs(self, source: data.Source, args: Any) -> dict[str, Any]:
        runs = data.probe_runs(source)
        metrics = data.order_metrics({m for run in runs.values() for m in run["metrics"]})
        return {"runs": runs, "metrics": metrics}

    def _overview(self, source: data.Source, args: Any) -> dict[str, Any]:
        runs = list(dict.fromkeys(args.getlist("run"))) or None
        metric, matrices = overview.overview(source, args.get("metric") or None, runs)
        return {"metric": metric, "runs": matrices}

    def _layer(self, source: data.Source, args: Any) -> dict[str, Any]:
        tag = _required(args, "tag")
        return {"tag": tag, "runs": views.layer_view(source, tag, _runs(args))}

    def _findings(self, source: data.Source, args: Any) -> dict[str, Any]:
        return {"runs": views.findings(source, _runs(args))}

    def _route(self, handler: Callable[[data.Source, Any], Any]) -> Callable:
        """A WSGI app answering `handler`'s result as JSON, and errors as 4xx JSON."""

        @wrappers.Request.application
        def app(request: wrappers.Request) -> Any:
            try:
                return _json(request, handler(self._source(request), request.args))
            except BadRequest as error:
                return _json(request, {"error": str(error)}, 400)
            except data.NotFound as error:
                return _json(request, {"error": str(error)}, 404)
            except tb_errors.PublicError as error:
                return _json(request, {"error": str(error)}, error.http_code)

        return app

    def _source(self, request: wrappers.Request) -> data.Source:
        if self._provider is None:
            raise tb_errors.FailedPreconditionError("TensorBoard has no data provider")
        return data.Source(
            self._provider,
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
            self._downsample,
            self._cache,
        )

    # werkzeug's stub types `application` for functions only; at run time it wraps bound
    # methods too (its documented use).
    @wrappers.Request.application  # type: ignore[arg-type]
    def _serve_blob(self, request: wrappers.Request) -> Any:
        key = request.args.get("key")
        if not key:
            return _json(
                request, {"error": "Missing argument `key` (a blob key from `layer`)"}, 400
            )
        try:
            blob = self._source(request).provider.read_blob(
                plugin_util.context(request.environ), blob_key=key
            )
        except (tb_errors.PublicError, ValueError, KeyError, IndexError) as error:
            return _json(request, {"error": f"No blob with key {key!r}: {error}"}, 404)
        content_type = next(
            (kind for magic, kind in _IMAGE_TYPES.items() if blob.startswith(magic)),
            "application/octet-stream",
        )
        return http_util.Respond(request, blob, content_type, expires=3600)

    @wrappers.Request.application  # type: ignore[arg-type]  # a method: see _serve_blob
    def _serve_static(self, request: wrappers.Request) -> Any:
        prefix = f"/data/plugin/{PLUGIN_NAME}/static/"
        name = posixpath.normpath(request.path.partition(prefix)[2])
        path = STATIC_DIR / name
        if name.startswith((".", "/")) or not path.is_file():
            return _json(request, {"error": f"No static file {name!r}"}, 404)
        content_type = _CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(name)[0]
        return http_util.Respond(request, path.read_bytes(), content_type or "text/plain")


def _required(args: Any, name: str) -> str:
    value = args.get(name)
    if not value:
        raise BadRequest(f"Missing argument `{name}`")
    return value


def _runs(args: Any) -> list[str]:
    runs = list(dict.fromkeys(args.getlist("run")))
    if not runs:
        raise BadRequest("Missing argument `run` (one or more TensorBoard run names)")
    return runs


def _json(request: wrappers.Request, body: Any, code: int = 200) -> Any:
    return http_util.Respond(request, body, "application/json", code=code)
