"""Where frames come from: cameras, streams, video files, image files and folders.

`open_source(spec)` turns what the user typed into a source:
    "0", "1"               USB/UVC camera by index
    "rtsp://...", "http://..."  network stream
    "genicam://", "genicam://DEVICE-ID"  industrial camera (GigE Vision, USB3 Vision) through Aravis
                           (app/sources_genicam.py; the optional extra '.[genicam]')
    a video file path      played as if it were a camera (loops in live view)
    an image file/folder   replays the pictures in name order

`LiveFeed` reads a source on its own thread and keeps only the newest frame,
so a slow consumer drops frames instead of queueing them, and it reconnects
by itself when a camera or stream goes away.

Pictures are checked as `detector.images.read_picture` checks them (header
size limit `max_megapixels`, damaged data refused, 16-bit samples scaled by
their significant bits: the file's, else `bit_depth`); each frame carries the
warnings about it (e.g. a nearly black picture) in `FeedFrame.warnings`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detector.images import BIT_DEPTHS, DEFAULT_MAX_MEGAPIXELS, PICTURE_SUFFIXES, range_warning, read_picture, to_uint8

if TYPE_CHECKING:
    from app.settings import CameraSettings

IMAGE_SUFFIXES = frozenset(PICTURE_SUFFIXES)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
GENICAM_PREFIX = "genicam://"
# Give up on a dead stream after this long instead of ffmpeg's 30 s default.
STREAM_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """A source cannot be opened or has stopped delivering frames."""


class FrameSource:
    """Base class: open(), read() -> frame or None at the end, close().

    `frame_warnings` says what is doubtful about the frame `read()` returned last
    (e.g. "picture uses under 1/16 of its range"); it never stops the frame.
    `frame_label` names that frame where the source can say more than its name
    (a camera's frame number); "" means the name.
    """

    name: str = ""
    live: bool = True  # a camera/stream (reconnect when lost) rather than a recording
    frame_warnings: tuple[str, ...] = ()
    frame_label: str = ""
    # A triggered camera delivers frames only when triggered: open is live, no frame is awaited to say so.
    waits_for_trigger: bool = False

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        """Ask a read() blocked on another thread (waiting for a trigger) to give up; no-op for most sources."""

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every frame once, with a label saying where it came from (for headless runs)."""
        self.open()
        try:
            n = 0
            while (frame := self.read()) is not None:
                yield f"{self.name}#{n}", frame
                n += 1
        finally:
            self.close()


class CaptureSource(FrameSource):
    """OpenCV VideoCapture: a camera index, a stream URL or a video file."""

    def __init__(self, target: int | str, loop: bool = False, bit_depth: int = 16):
        self.target = target
        self.bit_depth = bit_depth  # significant bits of 16-bit frames (a camera in raw mode)
        self.name = f"camera {target}" if isinstance(target, int) else str(target)
        self.is_file = isinstance(target, str) and not target.lower().startswith(STREAM_PREFIXES)
        self.live = not self.is_file
        self.loop = loop and self.is_file
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.close()
        if self.is_file and not Path(self.target).is_file():
            raise SourceError(f"video file not found: {self.target}")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            what = "video file" if self.is_file else "camera" if isinstance(self.target, int) else "stream"
            raise SourceError(f"cannot open {what} {self.target}")
        self._cap = cap

    def frame_interval(self) -> float | None:
        """Seconds between frames of a recording (for real-time replay); None for cameras."""
        if not self.is_file or self._cap is None:
            return None
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        return 1.0 / fps if 0 < fps < 1000 else None

    def read(self) -> np.ndarray | None:
        frame = self._grab()
        if frame is not None:
            warning = range_warning(frame, self.bit_depth)
            frame = to_uint8(frame, self.bit_depth)
            self.frame_warnings = (warning,) if warning else ()
        return frame

    def _grab(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.name} is not open")
        ok, frame = self._cap.read()
        if ok and frame is not None and frame.size:
            return frame
        if self.is_file:
            if self.loop and self._cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._cap.read()
                if ok and frame is not None and frame.size:
                    return frame
            return None  # end of the recording
        raise SourceError(f"{self.name} stopped delivering frames")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFilesSource(FrameSource):
    """Pictures from a file or a folder, in name order.

    In live view it holds the current picture (`step()` moves on) so the
    operator decides when to go to the next part; `frames()` gives each once.
    Unreadable files are skipped and named in `skipped` ("name: reason", each
    file once), never fatal; a source whose every picture is unreadable is.
    """

    live = False

    def __init__(self, path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, bit_depth: int = 16):
        self.path = Path(path)
        self.name = str(path)
        self.max_megapixels = max_megapixels
        self.bit_depth = bit_depth
        self.files: list[Path] = []
        self.index = 0
        self.skipped: list[str] = []
        self._bad: set[Path] = set()

    def open(self) -> None:
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SourceError(f"no pictures ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {self.path}")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise SourceError(f"no such file or folder: {self.path}")
        self.index = 0

    @property
    def current_file(self) -> Path | None:
        return self.files[self.index] if 0 <= self.index < len(self.files) else None

    @property
    def position(self) -> tuple[int, int]:
        """(number of the current picture from 1, number of pictures)."""
        return self.index + 1, len(self.files)

    def step(self, delta: int = 1) -> bool:
        """Move `delta` pictures on (back when negative), round the end; True when it went round."""
        if not self.files:
            return False
        target = self.index + delta
        self.index = target % len(self.files)
        return not 0 <= target < len(self.files)

    def read(self) -> np.ndarray | None:
        """The current picture; unreadable ones are skipped (noted) until a good one or the end."""
        while self.index < len(self.files):
            frame = self._read_current()
            if frame is not None:
                return frame
            self.index += 1
        return None

    def read_stepping(self, delta: int) -> tuple[np.ndarray, bool]:
        """Step `delta` pictures (0: stay) and read, skipping unreadable ones in the same direction.

        Returns the frame and whether the step went round the end or the start
        of the folder. SourceError when no picture of the source is readable.
        """
        wrapped = self.step(delta) if delta else False
        for _ in range(len(self.files)):
            frame = self._read_current()
            if frame is not None:
                return frame, wrapped
            wrapped |= self.step(-1 if delta < 0 else 1)
        if len(self.files) == 1:
            raise SourceError(f"cannot read picture {self.skipped[-1]}")
        raise SourceError(f"no readable pictures in {self.path} ({len(self.skipped)} unreadable, e.g. {self.skipped[0]})")

    def _read_current(self) -> np.ndarray | None:
        path = self.files[self.index]
        try:
            frame, info = read_picture(path, self.max_megapixels, self.bit_depth)
        except (ValueError, OSError) as exc:  # FileNotFoundError included: a file removed meanwhile
            if path not in self._bad:
                self._bad.add(path)
                self.skipped.append(f"{path.name}: {exc}")
            return None
        self.frame_warnings = info.warnings
        return frame

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        self.open()
        while self.index < len(self.files):
            frame = self.read()
            if frame is None:
                break
            yield str(self.files[self.index]), frame
            self.index += 1


def open_source(spec: str | int, loop_video: bool = False, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                bit_depth: int = 16, cameras: Callable[[str], CameraSettings] | None = None) -> FrameSource:
    """A source for what the user typed (see the module docstring). Not opened yet.

    `max_megapixels`: larger pictures are refused from their header; `bit_depth`:
    significant bits of 16-bit frames whose file does not say (8, 10, 12, 14, 16);
    `cameras`: the settings of a GenICam camera by device ID (StationSettings.camera_settings;
    None: free-run with the camera's own exposure, gain...). A GenICam camera's pixel
    format gives its bit depth.
    """
    if bit_depth not in BIT_DEPTHS:
        raise SourceError(f"bit depth must be one of {', '.join(map(str, BIT_DEPTHS))}, got {bit_depth!r}")
    if not max_megapixels > 0:
        raise SourceError(f"max_megapixels must be > 0, got {max_megapixels!r}")
    if isinstance(spec, int):
        return CaptureSource(spec, bit_depth=bit_depth)
    text = str(spec).strip()
    if not text:
        raise SourceError("no source given")
    if text.isdigit():
        return CaptureSource(int(text), bit_depth=bit_depth)
    if text.lower().startswith(STREAM_PREFIXES):
        return CaptureSource(text, bit_depth=bit_depth)
    if text.lower().startswith(GENICAM_PREFIX):
        from app.sources_genicam import GenICamSource, aravis, device_id_of

        aravis()  # SourceError saying how to install Aravis and PyGObject, now rather than at every reconnect
        return GenICamSource(device_id_of(text), cameras)
    path = Path(text).expanduser()
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource(path, max_megapixels, bit_depth)
    if path.suffix.lower() in VIDEO_SUFFIXES or path.is_file():
        return CaptureSource(str(path), loop=loop_video, bit_depth=bit_depth)
    raise SourceError(f"no such file or folder: {text}")


# -- live reading --------------------------------------------------------------

CONNECTING, LIVE, RECONNECTING, STOPPED, ENDED = "connecting", "live", "reconnecting", "stopped", "ended"
# NOT_FOUND: a camera or stream that never opened ("cannot open camera 5"); the feed keeps
# trying, as a camera may be plugged in later. RECONNECTING is one that was open once.
# FAILED: pictures that cannot be shown (a corrupt single file, a folder without a readable
# picture): said once in `error`, no retrying.
NOT_FOUND, FAILED = "not found", "failed"


@dataclass(frozen=True)
class FeedFrame:
    frame: np.ndarray
    seq: int  # increases with every new frame (every step through pictures too)
    time: float  # time.monotonic() when it arrived
    label: str  # where it came from (file name for pictures)
    warnings: tuple[str, ...] = ()  # what is doubtful about this frame (FrameSource.frame_warnings)
    position: tuple[int, int] | None = None  # pictures: (number from 1, count), e.g. (3, 20)
    wrapped: bool = False  # pictures: the step that brought this frame went round the end or the start


class LiveFeed:
    """Reads a source on a background thread, keeping only the newest frame.

    For picture files and folders (`is_pictures`): `step()` moves through them,
    each step publishes a new frame (new `seq`, even when it lands on the same
    picture), `FeedFrame.position`/`wrapped` say where it is, `at_end` whether
    the last picture is shown, and `skipped_files` names the unreadable files.
    """

    def __init__(self, source: FrameSource, reconnect_seconds: float = 2.0, picture_interval: float = 0.1,
                 lossless: bool = False):
        """`lossless`: a recording is read as fast as it is consumed, each frame held until `ack()`ed
        (every frame inspected once, e.g. `serve --trigger continuous` on a video), instead of
        playing at its own frame rate and dropping what the consumer has no time for."""
        self.source = source
        self.reconnect_seconds = reconnect_seconds
        self.picture_interval = picture_interval  # longest wait before a step is noticed
        self.lossless = lossless
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._acked = 0
        self._latest: FeedFrame | None = None
        self._seq = 0
        self._state = CONNECTING
        self._error = ""
        self._ever_connected = False
        self._times: list[float] = []
        self._stop = threading.Event()
        self._wake = threading.Event()  # a step was asked for
        self._step: int | None = None  # pictures to move on by; None: no step asked for
        self._thread = threading.Thread(target=self._run, name=f"feed {source.name}", daemon=True)

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end; a capture blocked in the driver is left to die with the process."""
        self._stop.set()
        self._wake.set()
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:
            interrupt()  # a camera waiting for a trigger would otherwise hold the thread (and the camera)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> str:
        return self._error

    @property
    def ever_connected(self) -> bool:
        """Whether the source ever opened (a camera that never did is NOT_FOUND, not RECONNECTING)."""
        return self._ever_connected

    @property
    def is_pictures(self) -> bool:
        """A picture file or folder (stepped by the operator; no frame rate)."""
        return isinstance(self.source, ImageFilesSource)

    @property
    def skipped_files(self) -> list[str]:
        """Unreadable pictures of the folder so far, "name: reason" each (empty for other sources)."""
        return list(self.source.skipped) if isinstance(self.source, ImageFilesSource) else []

    @property
    def at_end(self) -> bool:
        """The last picture of the folder is shown (a step on goes round to the first)."""
        latest = self.latest()
        return bool(latest and latest.position and latest.position[0] == latest.position[1])

    def latest(self) -> FeedFrame | None:
        with self._lock:
            return self._latest

    def wait_newer(self, after_seq: int, timeout: float) -> FeedFrame | None:
        """The newest frame with seq > `after_seq`, waiting up to `timeout` s for one (None: none came)."""
        with self._new_frame:
            self._new_frame.wait_for(lambda: self._latest is not None and self._latest.seq > after_seq, timeout)
            latest = self._latest
        return latest if latest is not None and latest.seq > after_seq else None

    def ack(self, seq: int) -> None:
        """A lossless feed's consumer is done with frame `seq`: the next one may be read."""
        with self._new_frame:
            self._acked = max(self._acked, seq)
            self._new_frame.notify_all()

    def fps(self) -> float:
        """Frames per second over the last couple of seconds (0 for pictures)."""
        with self._lock:
            times = list(self._times)
        if self.is_pictures or len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(1e-6, times[-1] - times[0])

    def step(self, delta: int = 1) -> None:
        """Next/previous picture of an image folder (no effect on cameras)."""
        with self._lock:
            self._step = (self._step or 0) + delta
        self._wake.set()

    def _publish(self, frame: np.ndarray, label: str, position: tuple[int, int] | None = None,
                 wrapped: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            warnings = tuple(getattr(self.source, "frame_warnings", ()))
            self._latest = FeedFrame(frame, self._seq, now, label, warnings, position, wrapped)
            self._times.append(now)
            cutoff = now - 2.0
            while self._times and self._times[0] < cutoff:
                self._times.pop(0)
            self._new_frame.notify_all()
        self._state, self._error = LIVE, ""

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.source.open()
                self._ever_connected = True
                if getattr(self.source, "waits_for_trigger", False):
                    self._state, self._error = LIVE, ""
                if isinstance(self.source, ImageFilesSource):
                    self._serve_pictures(self.source)
                else:
                    self._serve_capture()
                if self._state == ENDED:
                    return
            except SourceError as exc:
                self._error = str(exc)
                if self.is_pictures:  # nothing to wait for: said once
                    self._state = FAILED
                    return
            except Exception as exc:  # a driver failing in an unexpected way must not kill the feed
                self._error = f"{type(exc).__name__}: {exc}"
            finally:
                self.source.close()
            if self._stop.is_set():
                break
            self._state = RECONNECTING if self._ever_connected or not self.source.live else NOT_FOUND
            self._stop.wait(self.reconnect_seconds)
        self._state = STOPPED

    def _serve_capture(self) -> None:
        # A recording plays at its own frame rate, like the camera it stands in for (unless lossless).
        lossless = self.lossless and not self.source.live
        interval = self.source.frame_interval() if isinstance(self.source, CaptureSource) and not lossless else None
        next_time = time.monotonic()
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                self._state = ENDED
                with self._new_frame:
                    self._new_frame.notify_all()
                return
            self._publish(frame, getattr(self.source, "frame_label", "") or self.source.name)
            if lossless:
                with self._new_frame:
                    seq = self._seq
                    while self._acked < seq and not self._stop.is_set():
                        self._new_frame.wait(0.2)
                continue
            if interval:
                next_time = max(next_time + interval, time.monotonic() - interval)
                self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _serve_pictures(self, source: ImageFilesSource) -> None:
        delta: int | None = 0  # the first picture
        while not self._stop.is_set():
            if delta is not None:  # every step publishes, even one that lands on the same picture
                frame, wrapped = source.read_stepping(delta)
                self._publish(frame, source.current_file.name, source.position, wrapped)
            self._wake.wait(self.picture_interval)
            self._wake.clear()
            with self._lock:
                delta, self._step = self._step, None
