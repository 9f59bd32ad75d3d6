"""MQTT output (paho-mqtt): each result on PREFIX/STATION/result at QoS 1, the station state retained.

    mqtt://[USER[:PASSWORD]@]HOST[:PORT]/PREFIX[?ca=FILE]      (port 1883)
    mqtts://...                                                (TLS, port 8883)

A result counts as delivered only once the broker acknowledged it (PUBACK with a
success reason). The state topic PREFIX/STATION/state holds the station's state,
retained; the broker publishes `offline` there if the station vanishes (Last Will)
and the station says `offline` itself when it closes. paho's network thread
reconnects by itself; an unacknowledged result is sent again then.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from app.outputs import DeliveryError, parse_url
from app.outputs.payload import encode

log = logging.getLogger(__name__)

OFFLINE = "offline"  # the Last Will, and what a closing station says
ONLINE = "online"  # published on connect until the station says more
_URL_OPTIONS = ("ca", "certfile", "keyfile", "client_id")
_PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


def _topic_level(text: str, what: str) -> str:
    if not text or any(c in text for c in "+#/\0"):
        raise ValueError(f"{what} {text!r} cannot be an MQTT topic level: it must be non-empty, without / + # or NUL")
    return text


class MqttOutput:
    """Results to an MQTT broker; see the module doc for the URL."""

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None, ca: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, client_id: str | None = None,
                 keepalive: int = 30, ack_timeout: float = 10.0, reconnect_max_s: float = 10.0, protocol: str = "5"):
        parts, self.port = parse_url(url, ("mqtt", "mqtts"), {"mqtt": 1883, "mqtts": 8883})
        self.host = parts.hostname or ""
        self.tls = parts.scheme.lower() == "mqtts"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(_URL_OPTIONS))
        if unknown:
            raise ValueError(f"MQTT output: unknown URL option(s) {', '.join(unknown)} (known: {', '.join(_URL_OPTIONS)})")
        self.prefix = parts.path.strip("/")
        for level in self.prefix.split("/") if self.prefix else ():
            _topic_level(level, f"MQTT topic prefix {self.prefix!r}: level")
        self.user = user if user is not None else (unquote(parts.username) if parts.username else None)
        self.password = password if password is not None else (unquote(parts.password) if parts.password else None)
        if self.password is not None and self.user is None:
            raise ValueError("MQTT output: a password needs a user name")
        self.ca = ca or query.get("ca") or None
        self.certfile = certfile or query.get("certfile") or None
        self.keyfile = keyfile or query.get("keyfile") or None
        if not self.tls and (self.ca or self.certfile or self.keyfile):
            raise ValueError("MQTT output: TLS certificates given for mqtt://; use mqtts:// for TLS")
        if str(protocol) not in _PROTOCOLS:
            raise ValueError(f"MQTT output: protocol must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
        self.protocol = _PROTOCOLS[str(protocol)]
        self.client_id = client_id or query.get("client_id") or None
        self.keepalive = int(keepalive)
        self.ack_timeout = float(ack_timeout)
        self.reconnect_max_s = float(reconnect_max_s)
        if not (self.keepalive >= 5 and self.ack_timeout > 0 and self.reconnect_max_s > 0):
            raise ValueError("MQTT output: keepalive must be >= 5 s, ack_timeout and reconnect_max_s > 0")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.name = f"{parts.scheme.lower()}://{host}:{self.port}/{self.prefix}"
        self.result_topic = self.state_topic = ""
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._acks: dict[int, Any] = {}  # mid -> PUBACK reason code
        self._pending: tuple[str, int] | None = None  # (uid, mid) published and not yet acknowledged
        self._connected: bool | None = None
        self._error: str | None = None
        self._state = ONLINE
        self._closed = False
        self._wake: Callable[[], None] = lambda: None

    # -- Output -----------------------------------------------------------------------------------

    def open(self, station: str, wake: Callable[[], None]) -> None:
        _topic_level(station, "station name")
        base = f"{self.prefix}/{station}" if self.prefix else station
        self.result_topic, self.state_topic = f"{base}/result", f"{base}/state"
        self._wake = wake
        # Stable per station and output, so that a restarted station takes over its own old connection.
        client_id = self.client_id or f"inspection-{station}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.protocol)
        client.will_set(self.state_topic, OFFLINE, qos=1, retain=True)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self.tls:
            try:
                client.tls_set(ca_certs=self.ca, certfile=self.certfile, keyfile=self.keyfile,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ValueError(f"MQTT output {self.name}: cannot use the TLS files (ca={self.ca}, certfile={self.certfile},"
                                 f" keyfile={self.keyfile}): {exc}") from exc
        client.reconnect_delay_set(min(0.5, self.reconnect_max_s), self.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.host, self.port, self.keepalive)
        client.loop_start()  # paho's thread: connects, and reconnects after any loss

    def deliver(self, payload: Mapping[str, Any]) -> None:
        client = self._client
        if client is None or self._closed:
            raise DeliveryError(f"MQTT output {self.name} is not open")
        uid = str(payload["uid"])
        if self._pending is None or self._pending[0] != uid:
            with self._cond:
                self._acks.clear()  # acknowledgements nobody waits for any more (state messages)
            info = client.publish(self.result_topic, encode(payload), qos=1)
            # Not connected: paho keeps the message and sends it once connected again.
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise DeliveryError(f"MQTT publish to {self.name} failed: {mqtt.error_string(info.rc)}")
            self._pending = (uid, info.mid)
        mid = self._pending[1]
        deadline = time.monotonic() + self.ack_timeout
        with self._cond:  # disconnected: no use waiting (the worker tries again once `wake` says connected)
            while (mid not in self._acks and not self._closed and self._connected
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
            reason = self._acks.pop(mid, None)
        if reason is None:
            if self._closed:
                raise DeliveryError(f"MQTT output {self.name} closed before the broker acknowledged")
            if not self._connected:
                # Still pending: paho sends it again on reconnect, and the next try waits for that same message.
                raise DeliveryError(f"MQTT broker {self.host}:{self.port}: not connected"
                                    + (f" ({self._error})" if self._error else " yet"))
            self._pending = None  # connected and unanswered: the next try publishes it again
            raise DeliveryError(f"MQTT broker {self.host}:{self.port}: no acknowledgement within {self.ack_timeout:g} s")
        self._pending = None
        if reason.is_failure:
            raise DeliveryError(f"MQTT broker {self.host}:{self.port} refused the result: {reason}", refused=True)

    @property
    def connected(self) -> bool | None:
        return self._connected

    def set_state(self, state: str) -> None:
        self._state = str(state)
        client = self._client
        if client is not None and self._connected and not self._closed:
            client.publish(self.state_topic, self._state, qos=1, retain=True)  # queued: never blocks the station

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        client, self._client = self._client, None
        if client is None:
            return
        if self._connected:
            try:  # a station that closes says so; the Last Will is for one that vanishes
                client.publish(self.state_topic, OFFLINE, qos=1, retain=True).wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
        self._connected = False

    # -- paho callbacks (its network thread) ---------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connected, self._error = False, f"broker refused the connection: {reason_code}"
            log.warning("MQTT %s: %s", self.name, self._error)
            return
        log.info("MQTT %s: connected", self.name)
        self._connected, self._error = True, None
        # The broker may have restarted without its retained messages, or published the Last Will.
        client.publish(self.state_topic, self._state, qos=1, retain=True)
        self._wake()

    def _on_connect_fail(self, client, userdata) -> None:
        if self._connected is not False or self._error is None:
            log.warning("MQTT %s: cannot reach the broker at %s:%d; retrying", self.name, self.host, self.port)
        self._connected, self._error = False, f"cannot reach the broker at {self.host}:{self.port}"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        if not self._closed:
            self._error = f"disconnected ({reason_code})"
            if was:
                log.warning("MQTT %s: %s; reconnecting", self.name, self._error)
        with self._cond:
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if len(self._acks) >= 1000:  # state messages' acknowledgements, while a result waits long
                pending = self._pending
                self._acks = {m: r for m, r in self._acks.items() if pending is not None and m == pending[1]}
            self._acks[mid] = reason_code
            self._cond.notify_all()
