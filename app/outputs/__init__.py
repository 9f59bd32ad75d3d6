"""Result outputs: where each logged inspection goes next (MQTT broker, HTTP webhook).

The inspection log is the outbox: an `OutputWorker` reads it in id order from
each output's cursor and hands every result to its output, at least once; the
inspection uid is the receiver's idempotency key. Outputs are chosen by URL
scheme (`open_output`); nothing here imports Qt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit


class DeliveryError(RuntimeError):
    """A result was not acknowledged by the receiver (message says why); the worker retries it.

    `retry_after`: the receiver asked to wait this many seconds before the next try (None: it did not say).
    `refused`: the receiver answered and said no (e.g. HTTP 4xx): trying again helps only once someone fixes
    the receiver or the settings, so it is logged as an error; the result is kept and tried again all the same.
    """

    def __init__(self, message: str, retry_after: float | None = None, refused: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.refused = refused


@runtime_checkable
class Output(Protocol):
    """Where results go. Built by `open_output` (no network yet); the worker calls the rest from its thread."""

    name: str  # stable and free of credentials: the output's cursor in the log is kept under it

    def open(self, station: str, wake: Callable[[], None]) -> None:
        """Start connecting in the background (never blocks on the network); `wake()`: ready to deliver again.
        Raises ValueError for a setting it cannot use (station name, certificate file)."""

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Return once the receiver acknowledged the result; raise DeliveryError otherwise."""

    @property
    def connected(self) -> bool | None:
        """Whether the receiver is reachable now (None: not tried yet)."""

    def close(self) -> None:
        """Let go of the connection; a delivery in progress fails."""


@runtime_checkable
class StateOutput(Output, Protocol):
    """An output that also publishes the station's state (ready, busy, error, disconnected ...)."""

    def set_state(self, state: str) -> None:
        """Publish `state` without blocking; kept and published again after each reconnect."""


def parse_url(url: str, schemes: tuple[str, ...], default_ports: Mapping[str, int]) -> tuple[SplitResult, int]:
    """The URL split, and its port; ValueError naming what is wrong (scheme, host, port)."""
    text = str(url).strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"output URL {_shown(text)!r}: scheme must be one of {', '.join(schemes)}")
    if not parts.hostname:
        raise ValueError(f"output URL {_shown(text)!r} has no host (e.g. {scheme}://broker.plant:1883/...)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"output URL {_shown(text)!r} has a bad port: a number 1..65535 after the host") from None
    if port == 0:
        raise ValueError(f"output URL {_shown(text)!r} has a bad port: a number 1..65535 after the host")
    return parts, port or default_ports[scheme]


def _shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_output(url: str, **options: Any) -> Output:
    """The output a URL names: mqtt://HOST[:PORT]/PREFIX, mqtts://..., http(s)://... (a webhook).

    `options` are the output's own (see MqttOutput, WebhookOutput); ValueError for a
    URL or an option it cannot use. Nothing connects until the worker opens it.
    """
    scheme = urlsplit(str(url).strip()).scheme.lower()
    if scheme in ("mqtt", "mqtts"):
        from app.outputs.mqtt import MqttOutput as kind
    elif scheme in ("http", "https"):
        from app.outputs.webhook import WebhookOutput as kind
    elif "://" not in str(url):
        raise ValueError(f"output URL {_shown(str(url))!r} must start with mqtt://, mqtts://, http:// or https://")
    else:
        raise ValueError(f"output URL {_shown(str(url))!r}: unknown scheme {scheme + '://' if scheme else '(none)'};"
                         " use mqtt://, mqtts://, http:// or https://")
    known = [p.name for p in inspect.signature(kind).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"output {_shown(str(url))!r}: unknown option(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return kind(url, **options)
