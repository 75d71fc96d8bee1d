"""The dashboard's HTTP server: one static page, its assets, and JSON endpoints.

Standard library only (``http.server.ThreadingHTTPServer``): read-only ``GET``s, so no
framework is needed. Plotly's JavaScript is served from the installed ``plotly``
package; nothing is fetched from the network.

Endpoints (``{id}`` is an experiment id or name, URL-encoded)::

    GET /                                   the page (hash routes: #/, #/experiment/ID,
                                            #/compare/ID,ID...)
    GET /static/app.js|app.css|plotly.min.js
    GET /api/experiments                    list with counts, best loss, duration
    GET /api/experiments/{id}               summary: experiment, space, counts, best
    GET /api/experiments/{id}/trials        ?state=&sort=&desc=1&offset=&limit=
    GET /api/experiments/{id}/trials/{tid}  one trial: params, result, timings, log tail
    GET /api/experiments/{id}/points        ?after=SEQ&epoch=E: sample or new trials
    GET /api/experiments/{id}/curve         best loss so far (records only)
    GET /api/experiments/{id}/lanes         recent trials per worker
    GET /api/experiments/{id}/importance    parameter importance
    GET /api/compare?e=ID&e=ID              best-so-far curves and best trials

Bound to 127.0.0.1 by default. MongoDB data is shown to whoever can reach the port,
so binding elsewhere is the operator's decision; while bound to loopback, requests
whose ``Host`` is not a loopback name are refused (a guard against DNS rebinding).
Responses are gzip-compressed when the browser accepts it.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import logging
import math
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from broker.errors import TunerError
from broker.store import TrialStore
from tuner.dashboard.api import BadRequest, DashboardAPI, NotFound

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

GZIP_MIN_BYTES = 1024
"""Smaller responses are sent as they are: compressing them saves nothing."""

STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css",
                "index.html": "text/html"}
"""The page's own files (in ``tuner/dashboard/static``); nothing else is served from disk."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'")
"""Only the server's own scripts run (no inline script). Plotly needs ``unsafe-eval``
for its WebGL traces (parallel coordinates) and inline styles for its SVG."""

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str
    cache_control: str


class DashboardServer(ThreadingHTTPServer):
    """The dashboard over ``store``, listening on ``(host, port)`` (port 0: any free one).

    :meth:`start` serves from a daemon thread; :meth:`close` stops and closes it.
    ``bytes_sent`` counts response bytes per path (without query), for size budgets.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: TrialStore, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT) -> None:
        self.api = DashboardAPI(store)
        self.loopback = _is_loopback(host)
        self.bytes_sent: dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self._assets: dict[str, Asset] = {}
        self._assets_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_bytes(self, path: str, n: int) -> None:
        with self._stats_lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + n

    def total_bytes(self) -> int:
        with self._stats_lock:
            return sum(self.bytes_sent.values())

    def asset(self, name: str) -> Asset | None:
        """A static file, read and compressed once."""
        with self._assets_lock:
            if name not in self._assets:
                loaded = _load_asset(name)
                if loaded is None:
                    return None
                self._assets[name] = loaded
            return self._assets[name]


def serve(store: TrialStore, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
          ) -> DashboardServer:
    """Start the dashboard in a background thread; returns the running server."""
    return DashboardServer(store, host=host, port=port).start()


def _load_asset(name: str) -> Asset | None:
    if name == "plotly.min.js":
        import plotly

        body = resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
        # versioned by the package: cacheable for a day
        return _asset(body, "text/javascript", f"plotly-{plotly.__version__}",
                      "public, max-age=86400")
    if name not in STATIC_FILES:
        return None
    body = resources.files("tuner.dashboard").joinpath("static", name).read_bytes()
    return _asset(body, STATIC_FILES[name], hashlib.sha256(body).hexdigest()[:16], "no-cache")


def _asset(body: bytes, content_type: str, tag: str, cache_control: str) -> Asset:
    return Asset(body, gzip.compress(body, compresslevel=6, mtime=0),
                 f"{content_type}; charset=utf-8", f'"{tag}"', cache_control)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "tuner-dashboard"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        if not self._host_allowed():
            self._send_json({"error": "unexpected Host header"}, HTTPStatus.FORBIDDEN, url.path,
                            head)
            return
        try:
            if url.path in ("/", "/index.html"):
                self._send_asset("index.html", url.path, head)
            elif url.path.startswith("/static/"):
                self._send_asset(url.path[len("/static/"):], url.path, head)
            elif url.path.startswith("/api/"):
                payload = self._route(url.path, parse_qs(url.query))
                self._send_json(payload, HTTPStatus.OK, url.path, head)
            else:
                self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND, url.path, head)
        except NotFound as exc:
            self._send_json({"error": str(exc)}, HTTPStatus.NOT_FOUND, url.path, head)
        except BadRequest as exc:
            self._send_json({"error": str(exc)}, HTTPStatus.BAD_REQUEST, url.path, head)
        except TunerError as exc:
            log.warning("dashboard request %s failed: %s", self.path, exc)
            self._send_json({"error": str(exc)}, HTTPStatus.INTERNAL_SERVER_ERROR, url.path,
                            head)
        except Exception:  # a bug or a database error: the page shows it, the server lives
            log.exception("dashboard request %s failed", self.path)
            self._send_json({"error": "internal error (see the dashboard's log)"},
                            HTTPStatus.INTERNAL_SERVER_ERROR, url.path, head)

    def _route(self, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        api = self.server.api
        parts = [unquote(p) for p in path.split("/")[2:]]
        if parts == ["experiments"]:
            return api.experiments()
        if parts == ["compare"]:
            return api.compare(query.get("e", []))
        if len(parts) >= 2 and parts[0] == "experiments" and parts[1]:
            ref, rest = parts[1], parts[2:]
            if rest == []:
                return api.summary(ref)
            if rest == ["trials"]:
                return api.trials(
                    ref, state=_one(query, "state") or None, sort=_one(query, "sort") or "tid",
                    descending=_one(query, "desc") in ("1", "true"),
                    offset=_int(query, "offset", 0), limit=_int(query, "limit", 25))
            if len(rest) == 2 and rest[0] == "trials":
                try:
                    tid = int(rest[1])
                except ValueError:
                    raise BadRequest(f"not a trial id: {rest[1]!r}") from None
                return api.trial(ref, tid)
            if rest == ["points"]:
                return api.points(ref, after=_int(query, "after", 0),
                                  epoch=_one(query, "epoch") or None)
            if rest == ["curve"]:
                return api.curve(ref)
            if rest == ["lanes"]:
                return api.lanes(ref)
            if rest == ["importance"]:
                return api.importance(ref)
        raise NotFound(f"no endpoint {path}")

    def _host_allowed(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name.lower() in LOOPBACK_NAMES

    def _send_asset(self, name: str, path: str, head: bool) -> None:
        asset = self.server.asset(name)
        if asset is None:
            self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND, path, head)
            return
        headers = {"ETag": asset.etag, "Cache-Control": asset.cache_control}
        if self.headers.get("If-None-Match") == asset.etag:
            self._send(HTTPStatus.NOT_MODIFIED, b"", None, path, head=True, headers=headers)
            return
        gzipped = self._accepts_gzip()
        body = asset.gzipped if gzipped else asset.body
        self._send(HTTPStatus.OK, body, asset.content_type, path, head=head,
                   headers=headers, gzipped=gzipped)

    def _send_json(self, payload: Any, status: HTTPStatus, path: str, head: bool) -> None:
        body = _dumps(payload).encode()
        gzipped = len(body) >= GZIP_MIN_BYTES and self._accepts_gzip()
        if gzipped:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self._send(status, body, "application/json", path, head=head,
                   headers={"Cache-Control": "no-store"}, gzipped=gzipped)

    def _accepts_gzip(self) -> bool:
        return "gzip" in (self.headers.get("Accept-Encoding") or "")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None, path: str, *,
              head: bool, headers: dict[str, str], gzipped: bool = False) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head and status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)
            self.server.count_bytes(path, len(body))


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    return values[-1] if values else ""


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    raw = _one(query, key)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise BadRequest(f"{key} must not be negative")
    return value


def _dumps(payload: Any) -> str:
    """JSON for ``JSON.parse``: NaN and infinities (which it rejects) become null."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False,
                          default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
