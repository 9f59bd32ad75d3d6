"""HTTP webhook output: each result POSTed as JSON to a URL.

    http(s)://[USER:PASSWORD@]HOST[:PORT]/PATH[?QUERY]    (user/password: HTTP basic auth)

Headers: Content-Type application/json, Idempotency-Key = the inspection uid
(a result may come again after a failure or a restart). Only a 2xx answer
acknowledges a result. Redirects are not followed (a POST that turns into a GET
elsewhere would count as delivered without reaching anyone): a 3xx is a failure.
Timeouts, connection errors and 5xx are retried by the worker with back-off;
so is a 4xx, which is logged as an error: the receiver refused the message and
someone has to fix the receiver or the URL, but the result is never dropped.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from app.outputs import DeliveryError, parse_url
from app.outputs.payload import encode

USER_AGENT = "metal-inspection-station"
_TRANSIENT_4XX = (408, 425, 429)  # timeout, too early, too many requests: the receiver asks to try later


class WebhookOutput:
    """Results POSTed to an HTTP(S) URL; see the module doc."""

    def __init__(self, url: str, *, timeout: float = 10.0, ca: str | None = None, headers: Mapping[str, str] | None = None):
        parts, self.port = parse_url(url, ("http", "https"), {"http": 80, "https": 443})
        self.host = parts.hostname or ""
        self.tls = parts.scheme.lower() == "https"
        if ca and not self.tls:
            raise ValueError("webhook output: a CA file is for https:// URLs")
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"webhook output: timeout must be > 0 s, got {timeout}")
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **dict(headers or {})}
        if parts.username is not None:
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self._context: ssl.SSLContext | None = None
        if self.tls:
            try:
                self._context = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"webhook output: cannot use the CA file {ca}: {exc}") from exc
        host = f"[{self.host}]" if ":" in self.host else self.host
        # Query left out: it may carry a token, and the name is shown and kept as the cursor's key.
        self.name = f"{parts.scheme.lower()}://{host}:{self.port}{parts.path or '/'}"
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._connected: bool | None = None
        self._closed = False

    def open(self, station: str, wake: Callable[[], None]) -> None:
        self._closed = False

    def deliver(self, payload: Mapping[str, Any]) -> None:
        body = encode(payload)
        headers = {**self.headers, "Idempotency-Key": str(payload["uid"])}
        if self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                                           context=self._context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        with self._lock:
            if self._closed:
                raise DeliveryError(f"webhook {self.name} is closed")
            self._conn = conn  # close() can interrupt it
        try:
            conn.request("POST", self.target, body=body, headers=headers)
            response = conn.getresponse()
            status, reason = response.status, response.reason
            text = response.read(2000).decode("utf-8", "replace").strip()
            retry_after = response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:
            self._connected = False
            raise DeliveryError(f"POST to {self.name} failed: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        self._connected = 200 <= status < 300
        if self._connected:
            return
        detail = f"{status} {reason}" + (f": {text[:200]}" if text else "")
        wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            raise DeliveryError(f"webhook {self.name} refused the result ({detail}); it is kept and sent again until"
                                " the receiver accepts it: check the receiver and the URL", retry_after=wait, refused=True)
        raise DeliveryError(f"webhook {self.name} answered {detail}", retry_after=wait)

    @property
    def connected(self) -> bool | None:
        return self._connected

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a delivery waiting on the receiver
            except OSError:
                pass
