"""The plain-HTTP side of the WebSocket dialect: the web chat page and 404s.

A connection that starts with `GET ` either upgrades on `/ws` or fetches one
of the few files shipped in `transports/webpage/`. Everything here builds a
`websockets.http11.Response` for `ServerProtocol.send_response()`, which
closes the connection after any non-101 response: one request per
connection keeps the relay's per-connection machinery free of HTTP
keep-alive, and a page load costs a handful of requests at most.

Browsers. Any web page a user visits may open a WebSocket to any host the
browser can reach, a relay on their LAN included (same-origin rules do not
apply to WebSockets). What tells the relay which page asked is the `Origin`
header browsers add to every upgrade, so `/ws` admits only
(`origin_allowed`): no `Origin` at all (a non-browser client: chat-client,
websocat), an `Origin` naming this very host (the relay's own page: its
scheme is http or https and its host:port is the request's `Host`), or one
listed in `--allowed-origins` (a comma list; `*` admits every origin).
Others get `403` and never become a WebSocket.

Every response carries `Content-Security-Policy` (`CSP`: scripts, styles
and connections to this host only, no inline script, no framing) and
`X-Content-Type-Options: nosniff`, so a message that slips past the page's
escaping still cannot run script, and no other site can frame the page.
"""

from __future__ import annotations

import email.utils
import functools
import http
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

from websockets.datastructures import Headers, MultipleValuesError
from websockets.http11 import Request, Response

WS_PATH: Final = "/ws"

# URL path -> (file in transports/webpage, content type). Nothing else is served.
PAGES: Final[dict[str, tuple[str, str]]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    # Made from transports/commands.py, not a file: the slash commands' table.
    "/commands.json": ("commands.json", "application/json"),
}


# What the page may load and where it may connect. 'self' covers ws:// and
# wss:// to the page's own host:port in CSP3 browsers (Chromium, Firefox,
# Safari 15.4+): tests/clients/test_web_page.py runs the page under this policy.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
ANY_ORIGIN: Final = "*"


@functools.cache
def parse_allowed_origins(text: str) -> frozenset[str]:
    """`--allowed-origins`: a comma list of origins (`*` for all) as a set.

    Entries are normalised like a browser's `Origin` (lower case, no trailing
    slash, no default port) so `HTTP://A.example:80/` matches `http://a.example`.
    """
    out = set()
    for item in text.split(","):
        item = item.strip()
        if item:
            out.add(ANY_ORIGIN if item == ANY_ORIGIN else _normal_origin(item))
    return frozenset(out)


def _normal_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, hostport = origin.partition("://")
    port = _DEFAULT_PORTS.get(scheme)
    if sep and port and hostport.endswith(":" + port):
        hostport = hostport[: -len(port) - 1]
    return f"{scheme}{sep}{hostport}"


def _same_host(origin: str, host: str) -> bool:
    """Whether an http(s) `Origin` names the host:port this request was sent to."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc or parts.path:
        return False
    netloc = _normal_origin(origin).partition("://")[2]
    host = host.strip().lower()
    # Host carries no scheme: its default port is whichever the origin's is.
    for port in _DEFAULT_PORTS.values():
        if host.endswith(":" + port) and host[: -len(port) - 1] == netloc:
            return True
    return host == netloc


def origin_allowed(request: Request, allowed: frozenset[str]) -> bool:
    """Whether `/ws` may upgrade for this request (see the module docstring)."""
    try:
        origin = request.headers.get("Origin")
        host = request.headers.get("Host")
    except MultipleValuesError:  # two Origins (or Hosts): no browser sends that
        return False
    if origin is None:
        return True
    if ANY_ORIGIN in allowed or _normal_origin(origin) in allowed:
        return True
    return host is not None and _same_host(origin, host)


def route(request: Request) -> str:
    """The request's path without its query string (`/ws?x=1` -> `/ws`)."""
    return request.path.split("?", 1)[0].split("#", 1)[0]


@functools.cache
def webpage_file(name: str) -> bytes:
    """A file shipped in transports/webpage/ (or the command table), read once per process."""
    if name == "commands.json":
        from transports.commands import as_json

        return as_json().encode("utf-8")
    return (resources.files("transports") / "webpage" / name).read_bytes()


def _headers(content_type: str, length: int) -> Headers:
    return Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", "chat-relay"),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(length)),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", CSP),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
        ]
    )


def text_response(status: http.HTTPStatus, text: str) -> Response:
    """A short plain-text response (errors): the status line says it all."""
    body = text.encode()
    return Response(
        status.value, status.phrase, _headers("text/plain; charset=utf-8", len(body)), body
    )


def page_response(request: Request) -> Response:
    """The answer to any request that is not a WebSocket upgrade on /ws.

    GET or HEAD of a shipped file gives 200, another path 404, another
    method 405.
    """
    path = route(request)
    if path not in PAGES:
        return text_response(http.HTTPStatus.NOT_FOUND, f"404 not found: {path[:200]}\n")
    if request.method not in ("GET", "HEAD"):
        response = text_response(
            http.HTTPStatus.METHOD_NOT_ALLOWED, f"405: {request.method[:20]} is not allowed\n"
        )
        response.headers["Allow"] = "GET, HEAD"
        return response
    name, content_type = PAGES[path]
    try:
        body = webpage_file(name)
    except OSError:
        return text_response(
            http.HTTPStatus.INTERNAL_SERVER_ERROR, f"500: {name} is missing from the package\n"
        )
    headers = _headers(content_type, len(body))
    return Response(200, "OK", headers, b"" if request.method == "HEAD" else body)
