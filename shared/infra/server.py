"""uvicorn's HTTP protocol with a bound on the request line and headers (431 past it).

The one override of uvicorn internals in Rapport. uvicorn's httptools protocol reads
request headers without any limit: the parser joins each header value chunk by chunk,
so one unauthenticated request with a 64 MiB header holds a worker for seconds before
any middleware runs. This protocol counts the bytes of a request's head as they arrive
and answers 431 once they pass ``MAX_HEAD_BYTES``, before the parser sees them.

Relies on ``HttpToolsProtocol.data_received`` feeding the parser and on its parser
callbacks ``on_headers_complete`` and ``on_message_complete``;
``tests/unit/test_server.py`` fails if an upgrade changes that.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.infra.settings import HttpSettings

MAX_HEAD_BYTES = 32 * 1024  # request line and headers; common servers allow 8-16 KiB
_END = b"\r\n\r\n"


def _too_large() -> bytes:
    body = orjson.dumps(
        {
            "error": "headers_too_large",
            "message": f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
        }
    )
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol that answers 431 to a request head over ``MAX_HEAD_BYTES``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, for an end of head split across reads

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            end = (self._tail + data).find(_END)
            self._head_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
            self._tail = data[-3:]
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(_too_large())
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""  # keep-alive: next request


def uvicorn_options(settings: HttpSettings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` for every Rapport service.

    uvicorn by default believes ``X-Forwarded-For`` from loopback: a client there could
    be a new address at every request, and never be slowed down for guessing keys. Here
    only the proxies of ``RAPPORT_TRUSTED_PROXIES`` are believed (uvicorn's own
    ``ProxyHeadersMiddleware`` reads the header); without any, the peer's address is the
    client's.
    """
    trusted = settings.trusted_proxies
    return {"http": BoundedHttpTools, "proxy_headers": bool(trusted),
            "forwarded_allow_ips": trusted or None}  # fmt: skip
