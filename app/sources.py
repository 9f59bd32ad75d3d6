"""Where frames come from: cameras, streams, video files, image files and folders.

`open_source(spec)` turns what the user typed into a source:
    "0", "1"               USB/UVC camera by index
    "rtsp://...", "http://..."  network stream
    a video file path      played as if it were a camera (loops in live view)
    an image file/folder   replays the pictures in name order

`LiveFeed` reads a source on its own thread and keeps only the newest frame,
so a slow consumer drops frames instead of queueing them, and it reconnects
by itself when a camera or stream goes away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.images import read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Give up on a dead stream after this long instead of ffmpeg's 30 s default.
STREAM_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """A source cannot be opened or has stopped delivering frames."""


class FrameSource:
    """Base class: open(), read() -> frame or None at the end, close()."""

    name: str = ""
    live: bool = True  # a camera/stream (reconnect when lost) rather than a recording

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

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

    def __init__(self, target: int | str, loop: bool = False):
        self.target = target
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

    In live view it holds the current picture (step() moves on) so the
    operator decides when to go to the next part; `frames()` gives each once.
    Unreadable files are skipped with a note in `skipped`, never fatal.
    """

    live = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        self.files: list[Path] = []
        self.index = 0
        self.skipped: list[str] = []

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

    def step(self, delta: int = 1) -> None:
        if self.files:
            self.index = (self.index + delta) % len(self.files)

    def read(self) -> np.ndarray | None:
        # Skip unreadable files (noted) until a good one or the end.
        while self.index < len(self.files):
            path = self.files[self.index]
            try:
                return read_image(path)
            except (ValueError, FileNotFoundError, OSError) as exc:
                self.skipped.append(f"{path.name}: {exc}")
                self.index += 1
        return None

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        self.open()
        while self.index < len(self.files):
            frame = self.read()
            if frame is None:
                break
            yield str(self.files[self.index]), frame
            self.index += 1


def open_source(spec: str | int, loop_video: bool = False) -> FrameSource:
    """A source for what the user typed (see the module docstring). Not opened yet."""
    if isinstance(spec, int):
        return CaptureSource(spec)
    text = str(spec).strip()
    if not text:
        raise SourceError("no source given")
    if text.isdigit():
        return CaptureSource(int(text))
    if text.lower().startswith(STREAM_PREFIXES):
        return CaptureSource(text)
    path = Path(text).expanduser()
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource(path)
    if path.suffix.lower() in VIDEO_SUFFIXES or path.is_file():
        return CaptureSource(str(path), loop=loop_video)
    raise SourceError(f"no such file or folder: {text}")


# -- live reading --------------------------------------------------------------

CONNECTING, LIVE, RECONNECTING, STOPPED, ENDED = "connecting", "live", "reconnecting", "stopped", "ended"


@dataclass(frozen=True)
class FeedFrame:
    frame: np.ndarray
    seq: int  # increases with every new frame
    time: float  # time.monotonic() when it arrived
    label: str  # where it came from (file name for pictures)


class LiveFeed:
    """Reads a source on a background thread, keeping only the newest frame."""

    def __init__(self, source: FrameSource, reconnect_seconds: float = 2.0, picture_interval: float = 0.1):
        self.source = source
        self.reconnect_seconds = reconnect_seconds
        self.picture_interval = picture_interval  # how often a held picture is re-offered
        self._lock = threading.Lock()
        self._latest: FeedFrame | None = None
        self._seq = 0
        self._state = CONNECTING
        self._error = ""
        self._times: list[float] = []
        self._stop = threading.Event()
        self._step = 0
        self._thread = threading.Thread(target=self._run, name=f"feed {source.name}", daemon=True)

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end; a capture blocked in the driver is left to die with the process."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> str:
        return self._error

    def latest(self) -> FeedFrame | None:
        with self._lock:
            return self._latest

    def fps(self) -> float:
        """Frames per second over the last couple of seconds."""
        with self._lock:
            times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(1e-6, times[-1] - times[0])

    def step(self, delta: int = 1) -> None:
        """Next/previous picture of an image folder (no effect on cameras)."""
        with self._lock:
            self._step += delta

    def _publish(self, frame: np.ndarray, label: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            self._latest = FeedFrame(frame, self._seq, now, label)
            self._times.append(now)
            cutoff = now - 2.0
            while self._times and self._times[0] < cutoff:
                self._times.pop(0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.source.open()
                self._state, self._error = LIVE, ""
                if isinstance(self.source, ImageFilesSource):
                    self._serve_pictures(self.source)
                else:
                    self._serve_capture()
                if self._state == ENDED:
                    return
            except SourceError as exc:
                self._error = str(exc)
            except Exception as exc:  # a driver failing in an unexpected way must not kill the feed
                self._error = f"{type(exc).__name__}: {exc}"
            finally:
                self.source.close()
            if self._stop.is_set():
                break
            self._state = RECONNECTING
            self._stop.wait(self.reconnect_seconds)
        self._state = STOPPED

    def _serve_capture(self) -> None:
        # A recording plays at its own frame rate, like the camera it stands in for.
        interval = self.source.frame_interval() if isinstance(self.source, CaptureSource) else None
        next_time = time.monotonic()
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                self._state = ENDED
                return
            self._publish(frame, self.source.name)
            if interval:
                next_time = max(next_time + interval, time.monotonic() - interval)
                self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _serve_pictures(self, source: ImageFilesSource) -> None:
        shown = -1
        while not self._stop.is_set():
            with self._lock:
                delta, self._step = self._step, 0
            if delta:
                source.step(delta)
            if source.index != shown or delta:
                frame = source.read()
                if frame is None:
                    raise SourceError(f"no readable pictures in {source.path}")
                shown = source.index
                self._publish(frame, source.current_file.name)
            self._stop.wait(self.picture_interval)
