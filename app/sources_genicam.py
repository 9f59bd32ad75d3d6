"""Industrial cameras (GigE Vision, USB3 Vision: GenICam) through Aravis, as a frame source.

`genicam://` opens the first camera found, `genicam://DEVICE-ID` a given one (the ID `list_cameras()` shows,
e.g. "Aravis-Fake-GV01"; a serial number or an IP address also finds it). The camera's settings block
(`StationSettings.camera_settings(device_id)`) is applied each time it is opened, and what the camera took is
read back into `applied`: pixel format, sensor region, exposure, gain, frame rate, GigE packet size, trigger.

Frames: Mono8 as it is; Mono10/12/14/16, unpacked or packed (GigE Vision "Packed", PFNC "p"), are unpacked to
uint16 holding their significant bits and scaled to 8 bits like every other source's 16-bit frames
(`detector.images.to_uint8` with the format's bit depth), with the same "nearly black" warning.

Triggers: "free-run" streams (the newest frame is read, older ones waiting are dropped); "software" takes one
picture per `fire_trigger()` (the station fires it per inspection and inspects exactly that frame); "lineN"
takes one picture per pulse on the camera's input line N (inspect them in continuous mode; docs/cameras.md).

Health: `health()` counts frames delivered complete, incomplete and lost frames, missing and resent packets
(the stream's own statistics) and reconnects. A camera that stops answering makes `read()` raise SourceError,
so the live feed reconnects as for any camera, and the settings are applied again when it is back.

Aravis and PyGObject are optional (`pip install '.[genicam]'` and Debian packages): without them opening a
`genicam://` source raises SourceError saying how to install them; nothing else needs them.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.settings import CAMERA_PIXEL_FORMATS, CAMERA_TRIGGER_FREE_RUN, CAMERA_TRIGGER_SOFTWARE, CameraSettings
from app.sources import FrameSource, SourceError
from detector.images import range_warning, to_uint8

PREFIX = "genicam://"
INSTALL_HINT = ("install Aravis and PyGObject: sudo apt-get install gir1.2-aravis-0.8 libgirepository1.0-dev "
                "libcairo2-dev pkg-config, then pip install '.[genicam]' (or installer/install.sh --genicam)")

# GenICam PFNC codes of the formats we decode (what a buffer says it holds).
PFNC = {"Mono8": 0x01080001, "Mono10": 0x01100003, "Mono10p": 0x010A0046, "Mono10Packed": 0x010C0004,
        "Mono12": 0x01100005, "Mono12p": 0x010C0047, "Mono12Packed": 0x010C0006, "Mono14": 0x01100025,
        "Mono16": 0x01100007}
FORMAT_BY_CODE = {code: name for name, code in PFNC.items()}
# Bits each pixel takes in the buffer (unpacked formats: 16).
_STORED_BITS = {"Mono8": 8, "Mono10p": 10, "Mono10Packed": 12, "Mono12p": 12, "Mono12Packed": 12}

N_BUFFERS = 8  # frames the stream may hold: enough for a burst, few enough that a slow reader drops rather than lags
POLL_S = 0.1  # how often a waiting read() looks at the stop and camera-lost flags
FRAME_TIMEOUT_S = 3.0  # free-run: no complete frame for this long (plus 3 frame periods) means the camera is lost
PROBE_S = 2.0  # triggered: ask a silent camera whether it is still there this often
RETRIGGERS = 2  # software trigger: fire again when the frame it took arrived incomplete (the part is still there)

_DISCOVERY = threading.Lock()  # Aravis' device list is global to the process: one look-up or opening at a time
_aravis: tuple[Any, Any] | None = None


def aravis() -> tuple[Any, Any]:
    """(Aravis, GLib) from PyGObject; SourceError saying how to install them when they are missing."""
    global _aravis
    if _aravis is None:
        try:
            import gi

            gi.require_version("Aravis", "0.8")
            from gi.repository import Aravis, GLib
        except (ImportError, ValueError) as exc:  # no gi (ImportError), no Aravis typelib (ValueError)
            raise SourceError(f"GenICam cameras need Aravis 0.8 and PyGObject ({exc}): {INSTALL_HINT}") from None
        _aravis = Aravis, GLib
    return _aravis


@dataclass(frozen=True)
class CameraInfo:
    device_id: str  # what genicam://DEVICE-ID and the settings' cameras block use
    vendor: str
    model: str
    serial: str
    address: str  # IP address (GigE Vision) or USB path
    protocol: str = ""  # "GigEVision" or "USB3Vision"

    @property
    def source(self) -> str:
        return PREFIX + self.device_id

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} (serial {self.serial}, {self.protocol} {self.address})"


def list_cameras() -> list[CameraInfo]:
    """The GenICam cameras this PC sees now (GigE Vision on its networks, USB3 Vision on its ports; about 1 s)."""
    Aravis, _ = aravis()
    with _DISCOVERY:
        Aravis.update_device_list()
        return [CameraInfo(Aravis.get_device_id(i) or "", Aravis.get_device_vendor(i) or "", Aravis.get_device_model(i) or "",
                           Aravis.get_device_serial_nbr(i) or "", Aravis.get_device_address(i) or "",
                           Aravis.get_device_protocol(i) or "")
                for i in range(Aravis.get_n_devices())]


def decode_mono(data: bytes, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A frame's pixels: uint8 for Mono8, else uint16 holding the format's significant bits (LSB-aligned).

    Packed layouts: GigE Vision Mono10Packed/Mono12Packed put two pixels in three bytes, the high bits of each in
    its own byte and the low bits of both in the middle byte; PFNC Mono10p/Mono12p pack pixels as one little-endian
    bit stream (4 pixels in 5 bytes, 2 in 3). ValueError for an unknown format or too little data.
    """
    if pixel_format not in PFNC:
        raise ValueError(f"pixel format {pixel_format!r} is not one of {', '.join(PFNC)}")
    n = width * height
    stored = _STORED_BITS.get(pixel_format, 16)
    need = (n * stored + 7) // 8
    raw = np.frombuffer(data, np.uint8)
    if width <= 0 or height <= 0 or raw.size < need:
        raise ValueError(f"a {width}x{height} {pixel_format} frame needs {need} bytes, got {raw.size}")
    if pixel_format == "Mono8":
        return raw[:need].reshape(height, width).copy()
    if stored == 16:
        return raw[:need].view("<u2").reshape(height, width).astype(np.uint16)
    group_bytes, group_pixels = (5, 4) if pixel_format == "Mono10p" else (3, 2)
    groups = -(-n // group_pixels)
    packed = np.zeros(groups * group_bytes, np.uint16)
    packed[:need] = raw[:need]
    b = packed.reshape(groups, group_bytes)
    if pixel_format == "Mono10p":
        pixels = [b[:, 0] | (b[:, 1] & 0x03) << 8, b[:, 1] >> 2 | (b[:, 2] & 0x0F) << 6,
                  b[:, 2] >> 4 | (b[:, 3] & 0x3F) << 4, b[:, 3] >> 6 | b[:, 4] << 2]
    elif pixel_format == "Mono12p":
        pixels = [b[:, 0] | (b[:, 1] & 0x0F) << 8, b[:, 1] >> 4 | b[:, 2] << 4]
    elif pixel_format == "Mono12Packed":
        pixels = [b[:, 0] << 4 | (b[:, 1] & 0x0F), b[:, 2] << 4 | b[:, 1] >> 4]
    else:  # Mono10Packed
        pixels = [b[:, 0] << 2 | (b[:, 1] & 0x03), b[:, 2] << 2 | (b[:, 1] >> 4) & 0x03]
    return np.stack(pixels, axis=1).reshape(-1)[:n].reshape(height, width)


def device_id_of(spec: str) -> str | None:
    """The device ID in "genicam://DEVICE-ID" (None: the first camera)."""
    if not spec.lower().startswith(PREFIX):
        raise ValueError(f"not a GenICam source: {spec!r} (genicam:// or genicam://DEVICE-ID)")
    return spec[len(PREFIX):].strip().rstrip("/") or None


class GenICamSource(FrameSource):
    """A GenICam camera through Aravis (see the module docstring). open()/read()/close() on one thread (the feed's);
    `fire_trigger()`, `health()` and `interrupt()` may be called from others."""

    live = True

    def __init__(self, device_id: str | None = None,
                 settings: CameraSettings | Callable[[str], CameraSettings] | None = None):
        """`device_id`: None for the first camera found; `settings`: the settings of every camera, or a look-up
        by device ID (StationSettings.camera_settings); None: free-run, the camera's own values."""
        self.requested_id = device_id
        self.device_id = device_id  # the camera opened last (the first camera's ID once found)
        every = settings if isinstance(settings, CameraSettings) else CameraSettings()
        self._lookup = settings if callable(settings) else (lambda _device_id: every)
        self.name = PREFIX + (device_id or "")
        self.settings = self._lookup(device_id or "")
        self.applied: CameraSettings | None = None  # what the camera took, read back when opened
        self.info: CameraInfo | None = None
        self.bit_depth = 8
        self.frame_label = ""
        self.frame_id = -1  # the camera's number of the frame read last
        self._camera = self._stream = self._lost_handler = None
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._lost = threading.Event()
        self._awaiting = False  # a software trigger was fired and its frame has not come yet
        self._retriggers_left = 0
        self._opened = 0
        self._counts = {"read": 0, "reconnects": 0, "triggers": 0, "retriggers": 0}
        self._closed_stats: dict[str, int] = {}  # the statistics of streams closed before (reconnects)

    # -- what the station asks -----------------------------------------------------------------

    @property
    def software_trigger(self) -> bool:
        return self.settings.trigger == CAMERA_TRIGGER_SOFTWARE

    @property
    def waits_for_trigger(self) -> bool:
        """Frames come only when triggered: being open is being live (the feed does not wait for a frame)."""
        return self.settings.trigger != CAMERA_TRIGGER_FREE_RUN

    @property
    def trigger_timeout(self) -> float:
        return self.settings.trigger_timeout

    def fire_trigger(self) -> None:
        """Take one picture now (software trigger); `read()` returns it. SourceError when the camera cannot."""
        camera = self._camera
        if camera is None:
            raise SourceError(f"{self.name} is not connected")
        if not self.software_trigger:
            raise SourceError(f"{self.name} is not in software trigger mode (trigger: {self.settings.trigger})")
        _, GLib = aravis()
        with self._lock:
            self._awaiting, self._retriggers_left = True, RETRIGGERS
            self._counts["triggers"] += 1
        try:
            camera.software_trigger()
        except GLib.Error as exc:
            self._lost.set()  # a camera that cannot take a command is reconnected
            raise SourceError(f"{self.name}: software trigger failed: {exc.message}") from None

    def interrupt(self) -> None:
        """Make a read() waiting on another thread give up (SourceError): the feed is stopping."""
        self._interrupted.set()

    def health(self) -> dict[str, int]:
        """Counters since this source was made (over reconnects): frames complete, incomplete, lost, read,
        missing and resent packets, resend requests, reconnects, software triggers and re-fired triggers."""
        with self._lock:
            stats = dict(self._closed_stats)
            if self._stream is not None:
                for key, value in _stream_stats(self._stream).items():
                    stats[key] = stats.get(key, 0) + value
            counts = dict(self._counts)
        return {"frames": stats.get("n_completed_buffers", 0), "incomplete": stats.get("n_failures", 0),
                "lost": stats.get("n_missing_frames", 0) + stats.get("n_underruns", 0),
                "missing_packets": stats.get("n_missing_packets", 0), "resent_packets": stats.get("n_resent_packets", 0),
                "resend_requests": stats.get("n_resend_requests", 0), **counts}

    # -- open / read / close -------------------------------------------------------------------

    def open(self) -> None:
        Aravis, GLib = aravis()
        self.close()
        self._interrupted.clear()
        self._lost.clear()
        camera, info = self._connect(Aravis, GLib)
        self.device_id, self.info, self.name = info.device_id, info, PREFIX + info.device_id
        self.settings = self._lookup(info.device_id)
        try:
            self._configure(Aravis, camera, self.settings)
            stream = self._start(Aravis, camera)
        except GLib.Error as exc:
            raise SourceError(f"{self.name}: {exc.message}") from None
        device = camera.get_device()
        handler = device.connect("control-lost", lambda _device: self._lost.set())  # from Aravis' heartbeat thread
        with self._lock:
            self._camera, self._stream, self._lost_handler = camera, stream, (device, handler)
            self._awaiting = False
            if self._opened:
                self._counts["reconnects"] += 1
            self._opened += 1

    def read(self) -> np.ndarray:
        """The next frame (free-run: the newest; triggered: the next one taken), 8-bit; SourceError when the camera
        is lost, delivers no complete frame in free-run for a while, or the feed is stopping."""
        timeout = None
        if not self.waits_for_trigger:
            rate = self.applied.frame_rate if self.applied is not None and self.applied.frame_rate else 1.0
            timeout = FRAME_TIMEOUT_S + 3.0 / rate
        return self._next_frame(timeout)

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """Frames until the caller stops (a live camera never ends); in software trigger mode one trigger each."""
        self.open()
        try:
            while True:
                if self.software_trigger:
                    self.fire_trigger()
                    frame = self._next_frame(self.trigger_timeout, after_trigger=True)
                else:
                    frame = self.read()
                yield self.frame_label, frame
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            camera, stream, lost = self._camera, self._stream, self._lost_handler
            self._camera = self._stream = self._lost_handler = None
            if stream is not None:
                for key, value in _stream_stats(stream).items():
                    self._closed_stats[key] = self._closed_stats.get(key, 0) + value
        if camera is None:
            return
        if lost is not None:
            lost[0].disconnect(lost[1])  # first: a late "control lost" of this connection must not end the next one
        if self._lost.is_set():
            # The camera may be gone, and every command to it waits out its timeouts (about 10 s in all): let it go
            # on a thread of its own, so the feed says "reconnecting" and tries again at once.
            threading.Thread(target=_release, args=(camera, stream), name=f"release {self.name}", daemon=True).start()
        else:
            _release(camera, stream)

    # -- inside ---------------------------------------------------------------------------------

    def _connect(self, Aravis, GLib) -> tuple[Any, CameraInfo]:
        """The camera asked for; for "the first camera", the one opened before if it is still there, else the first."""
        if self.requested_id:
            candidates = [self.requested_id]
        else:
            candidates = ([self.device_id] if self.device_id else []) + [None]
        error = ""
        with _DISCOVERY:
            for wanted in candidates:
                if wanted is None:
                    Aravis.update_device_list()
                    if Aravis.get_n_devices() == 0:
                        raise SourceError("no GenICam camera found (GigE Vision on this PC's networks, USB3 Vision on "
                                          "its USB ports)")
                    wanted = Aravis.get_device_id(0)
                try:
                    camera = Aravis.Camera.new(wanted)
                except GLib.Error as exc:
                    error = f"camera {wanted} not found ({exc.message})"
                    continue
                return camera, _camera_info(Aravis, camera, wanted)
        raise SourceError(error)

    def _configure(self, Aravis, camera, s: CameraSettings) -> None:
        """Apply the settings (order matters: the format and region set the payload; the frame rate before the
        trigger, as setting it turns triggers off on some cameras) and read back what the camera took."""
        if camera.is_gv_device() and _is_loopback(_device_address(camera)):
            # Aravis' packet-socket receiver listens on the network card, which never sees loopback traffic.
            camera.gv_set_stream_options(Aravis.GvStreamOption.PACKET_SOCKET_DISABLED)
        offered = list(camera.dup_available_pixel_formats_as_strings() or [])
        current = camera.get_pixel_format_as_string()
        wanted = s.pixel_format or (current if current in CAMERA_PIXEL_FORMATS else "Mono8")
        if wanted not in offered:
            raise SourceError(f"{self.name} has no pixel format {wanted} (it offers {', '.join(offered)}); set the "
                              f"camera's pixel_format to one of {', '.join(f for f in CAMERA_PIXEL_FORMATS if f in offered)}")
        if wanted != current:
            camera.set_pixel_format_from_string(wanted)
        if s.roi is not None:
            camera.set_region(*s.roi)
        if s.exposure_us is not None:
            if camera.is_exposure_auto_available():
                camera.set_exposure_time_auto(Aravis.Auto.OFF)
            _check_bounds(self.name, "exposure_us", s.exposure_us, camera.get_exposure_time_bounds())
            camera.set_exposure_time(s.exposure_us)
        if s.gain_db is not None:
            if camera.is_gain_auto_available():
                camera.set_gain_auto(Aravis.Auto.OFF)
            _check_bounds(self.name, "gain_db", s.gain_db, camera.get_gain_bounds())
            camera.set_gain(s.gain_db)
        if s.frame_rate is not None:
            _check_bounds(self.name, "frame_rate", s.frame_rate, camera.get_frame_rate_bounds())
            camera.set_frame_rate(s.frame_rate)
        if s.packet_size is not None:
            if not camera.is_gv_device():
                raise SourceError(f"{self.name} is not a GigE Vision camera: packet_size does not apply to it")
            camera.gv_set_packet_size(s.packet_size)
        if s.trigger == CAMERA_TRIGGER_FREE_RUN:
            if camera.is_feature_available("TriggerMode"):
                camera.clear_triggers()
        elif s.trigger == CAMERA_TRIGGER_SOFTWARE:
            if not camera.is_software_trigger_supported():
                raise SourceError(f"{self.name} has no software trigger (TriggerSoftware); use free-run or a line")
            camera.set_trigger("Software")
        else:
            lines = list(camera.dup_available_trigger_sources() or [])
            if s.trigger_line not in lines:
                raise SourceError(f"{self.name} has no trigger input {s.trigger_line} (it has {', '.join(lines) or 'none'})")
            camera.set_trigger(s.trigger_line)
            camera.set_string("TriggerActivation", "RisingEdge" if s.trigger_activation == "rising" else "FallingEdge")
        camera.set_acquisition_mode(Aravis.AcquisitionMode.CONTINUOUS)
        self.applied = self._read_back(camera, s)
        self.bit_depth = CAMERA_PIXEL_FORMATS[self.applied.pixel_format]

    def _read_back(self, camera, s: CameraSettings) -> CameraSettings:
        region = camera.get_region()
        trigger, activation = CAMERA_TRIGGER_FREE_RUN, s.trigger_activation
        if camera.is_feature_available("TriggerMode") and camera.get_string("TriggerMode") == "On":
            source = camera.get_trigger_source()
            trigger = CAMERA_TRIGGER_SOFTWARE if source == "Software" else source.lower()
            if trigger.startswith("line") and camera.is_feature_available("TriggerActivation"):
                activation = "falling" if camera.get_string("TriggerActivation") == "FallingEdge" else "rising"
        try:
            return CameraSettings(
                exposure_us=camera.get_exposure_time() if camera.is_exposure_time_available() else None,
                gain_db=camera.get_gain() if camera.is_gain_available() else None,
                pixel_format=camera.get_pixel_format_as_string(),
                roi=(region.x, region.y, region.width, region.height),
                frame_rate=camera.get_frame_rate() if camera.is_frame_rate_available() else None,
                packet_size=camera.gv_get_packet_size() if camera.is_gv_device() else None,
                trigger=trigger, trigger_activation=activation, trigger_timeout=s.trigger_timeout)
        except ValueError as exc:  # a trigger source or format we do not drive (set by another program)
            raise SourceError(f"{self.name} is set in a way the station cannot use: {exc}") from None

    def _start(self, Aravis, camera):
        payload = camera.get_payload()
        stream = camera.create_stream(None, None)
        if stream is None:
            raise SourceError(f"{self.name}: cannot open its stream")
        if camera.is_gv_device():
            # A frame arrives as a burst of packets: give the socket room for a few (the kernel caps it at
            # net.core.rmem_max; docs/cameras.md says how to raise that on a plant PC).
            stream.set_property("socket-buffer", Aravis.GvStreamSocketBuffer.FIXED)
            stream.set_property("socket-buffer-size", min(64 << 20, max(4 << 20, 4 * payload)))
        for _ in range(N_BUFFERS):
            stream.push_buffer(Aravis.Buffer.new_allocate(payload))
        camera.start_acquisition()
        return stream

    def _next_frame(self, timeout: float | None, after_trigger: bool = False) -> np.ndarray:
        """Wait for a complete frame: `timeout` s (None: as long as the camera is there)."""
        Aravis, GLib = aravis()
        stream, camera = self._stream, self._camera
        if stream is None or camera is None:
            raise SourceError(f"{self.name} is not open")
        start = last_probe = time.monotonic()
        while True:
            if self._interrupted.is_set():
                raise SourceError(f"{self.name}: reading stopped")
            if self._lost.is_set():  # Aravis' heartbeat says so, or a command failed
                raise SourceError(f"{self.name} stopped answering: camera lost")
            buffer = stream.timeout_pop_buffer(int(POLL_S * 1e6))
            now = time.monotonic()
            if buffer is None:
                if timeout is not None and now - start > timeout:
                    what = "after the software trigger" if after_trigger else "in free-run"
                    self._lost.set()
                    raise SourceError(f"{self.name} delivered no complete frame {what} for {now - start:.1f} s")
                if timeout is None and now - last_probe > PROBE_S:  # a triggered camera is silent: is it there?
                    last_probe = now
                    try:
                        camera.get_payload()
                    except GLib.Error as exc:
                        self._lost.set()
                        raise SourceError(f"{self.name} stopped answering: {exc.message}") from None
                continue
            while (newer := stream.try_pop_buffer()) is not None:  # a slow reader takes the newest, drops the rest
                stream.push_buffer(buffer)
                buffer = newer
            frame = self._take(Aravis, stream, buffer)
            if frame is not None:
                return frame
            with self._lock:
                refire = self._awaiting and self._retriggers_left > 0
                if refire:
                    self._retriggers_left -= 1
                    self._counts["retriggers"] += 1
            if refire:  # the part is still in front of the camera: take it again
                try:
                    camera.software_trigger()
                except GLib.Error as exc:
                    self._lost.set()
                    raise SourceError(f"{self.name}: software trigger failed: {exc.message}") from None

    def _take(self, Aravis, stream, buffer) -> np.ndarray | None:
        """The buffer's frame in 8 bits (None: incomplete, counted by the stream); the buffer goes back to the stream."""
        try:
            if buffer.get_status() != Aravis.BufferStatus.SUCCESS:
                return None
            code = buffer.get_image_pixel_format()
            pixel_format = FORMAT_BY_CODE.get(code)
            if pixel_format is None:
                raise SourceError(f"{self.name} sent a frame in pixel format 0x{code:08x}, which the station does not "
                                  f"decode; set the camera's pixel_format to one of {', '.join(CAMERA_PIXEL_FORMATS)}")
            try:
                raw = decode_mono(buffer.get_image_data(), buffer.get_image_width(), buffer.get_image_height(), pixel_format)
            except ValueError as exc:
                raise SourceError(f"{self.name}: {exc}") from None
            frame_id = buffer.get_frame_id()
        finally:
            stream.push_buffer(buffer)
        bits = CAMERA_PIXEL_FORMATS[pixel_format]
        warning = range_warning(raw, bits)
        with self._lock:
            self._awaiting = False
            self._counts["read"] += 1
        self.bit_depth, self.frame_id = bits, frame_id
        self.frame_warnings = (warning,) if warning else ()
        self.frame_label = f"{self.name} frame {frame_id}"
        return to_uint8(raw, bits)


def _release(camera, stream) -> None:
    """Stop the camera's acquisition and let it go: when the last references go, with this call, the stream's
    thread ends and the camera's control is given up."""
    _, GLib = aravis()
    try:
        camera.stop_acquisition()
    except GLib.Error:
        pass  # a lost camera: nothing to stop


def health_text(health: dict[str, int]) -> str:
    """One line for a status bar, e.g. "camera: 1200 frames, 3 incomplete, 0 lost, 12 packets resent, 1 reconnect"."""
    text = (f"camera: {health['frames']} frames, {health['incomplete']} incomplete, {health['lost']} lost, "
            f"{health['resent_packets']} packets resent")
    if health.get("reconnects"):
        text += f", {health['reconnects']} reconnect" + ("s" if health["reconnects"] > 1 else "")
    return text


def _camera_info(Aravis, camera, wanted: str) -> CameraInfo:
    """The device list's entry for an opened camera (found by ID, serial, address or physical ID), else its own words."""
    for i in range(Aravis.get_n_devices()):
        if wanted in (Aravis.get_device_id(i), Aravis.get_device_serial_nbr(i), Aravis.get_device_address(i),
                      Aravis.get_device_physical_id(i)):
            return CameraInfo(Aravis.get_device_id(i), Aravis.get_device_vendor(i) or "", Aravis.get_device_model(i) or "",
                              Aravis.get_device_serial_nbr(i) or "", Aravis.get_device_address(i) or "",
                              Aravis.get_device_protocol(i) or "")
    return CameraInfo(wanted, camera.get_vendor_name() or "", camera.get_model_name() or "",
                      camera.get_device_serial_number() or "", _device_address(camera),
                      "GigEVision" if camera.is_gv_device() else "USB3Vision")


def _stream_stats(stream) -> dict[str, int]:
    """The stream's counters (names differ between GigE Vision and USB3 Vision streams; both have these or some)."""
    out = {}
    for i in range(stream.get_n_infos()):
        name = stream.get_info_name(i)
        if stream.get_info_type(i).name == "guint64":
            out[name] = int(stream.get_info_uint64(i))
    return out


def _check_bounds(name: str, field: str, value: float, bounds) -> None:
    if not bounds.min <= value <= bounds.max:
        raise SourceError(f"{name}: {field} {value:g} is outside the camera's range {bounds.min:g}..{bounds.max:g}")


def _device_address(camera) -> str:
    """A GigE Vision camera's IP address ("" for USB3 Vision)."""
    if not camera.is_gv_device():
        return ""
    return camera.get_device().get_device_address().get_address().to_string()  # a socket address: IP and port


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
