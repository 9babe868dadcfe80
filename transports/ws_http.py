"""The plain-HTTP side of the WebSocket dialect: the web chat page and 404s.

A connection that starts with `GET ` either upgrades on `/ws` or fetches one
of the few files shipped in `transports/static/`. Everything here builds a
`websockets.http11.Response` for `ServerProtocol.send_response()`, which
closes the connection after any non-101 response: one request per
connection keeps the relay's per-connection machinery free of HTTP
keep-alive, and a page load costs a handful of requests at most.
"""

from __future__ import annotations

import email.utils
import functools
import http
from importlib import resources
from typing import Final

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WS_PATH: Final = "/ws"

# URL path -> (file in transports/static, content type). Nothing else is served.
PAGES: Final[dict[str, tuple[str, str]]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def route(request: Request) -> str:
    """The request's path without its query string (`/ws?x=1` -> `/ws`)."""
    return request.path.split("?", 1)[0].split("#", 1)[0]


@functools.cache
def static_file(name: str) -> bytes:
    """A file shipped in transports/static/, read once per process."""
    return (resources.files("transports") / "static" / name).read_bytes()


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
        body = static_file(name)
    except OSError:
        return text_response(
            http.HTTPStatus.INTERNAL_SERVER_ERROR, f"500: {name} is missing from the package\n"
        )
    headers = _headers(content_type, len(body))
    return Response(200, "OK", headers, b"" if request.method == "HEAD" else body)
