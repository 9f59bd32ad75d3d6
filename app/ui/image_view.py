"""Shows a frame scaled to fit, draws the inspection region, and lets the user draw a new one."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from detector.regions import Roi


def to_qimage(bgr: np.ndarray) -> QImage:
    """A QImage that owns a copy of a uint8 grey or BGR array."""
    img = np.ascontiguousarray(bgr)
    h, w = img.shape[:2]
    if img.ndim == 2:
        return QImage(img.data, w, h, img.strides[0], QImage.Format.Format_Grayscale8).copy()
    return QImage(img.data, w, h, img.strides[0], QImage.Format.Format_BGR888).copy()


class ImageView(QWidget):
    """Frame display with region drawing.

    `set_image(image, frame_size)`: `image` may be the frame enlarged (the
    overlay draws small frames bigger); `frame_size` says which frame pixels it
    shows so regions are always in frame pixels.
    """

    roi_drawn = Signal(object)  # Roi in frame pixels

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self._image: QImage | None = None
        self._frame_size: tuple[int, int] | None = None
        self._regions: list[tuple[Roi, str]] = []
        self._show_roi = True
        self._drawing = False
        self._drag_start: QPointF | None = None
        self._drag_now: QPointF | None = None
        self._message = ""
        self._banner = ""

    def sizeHint(self) -> QSize:
        return QSize(800, 600)

    # -- content -----------------------------------------------------------------

    def set_image(self, image: np.ndarray | None, frame_size: tuple[int, int] | None = None,
                  show_roi: bool = True) -> None:
        if image is None:
            self._image, self._frame_size = None, None
        else:
            self._image = to_qimage(image)
            self._frame_size = frame_size or (image.shape[1], image.shape[0])
        self._show_roi = show_roi
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def set_roi(self, roi: Roi | None) -> None:
        self.set_regions([(roi, "")] if roi is not None else [])

    def set_regions(self, regions: list[tuple[Roi, str]]) -> None:
        """The inspection regions outlined on the live picture, each with its name (may be "")."""
        self._regions = [(roi, name) for roi, name in regions if roi is not None]
        self.update()

    def regions(self) -> list[tuple[Roi, str]]:
        return list(self._regions)

    def set_message(self, text: str) -> None:
        """Centred hint when there is no picture (e.g. no camera yet)."""
        self._message = text
        self.update()

    def set_banner(self, text: str) -> None:
        """A warning strip across the top of the picture (e.g. camera disconnected)."""
        self._banner = text
        self.update()

    def banner(self) -> str:
        return self._banner

    def start_drawing(self) -> None:
        """The next mouse drag on the picture defines the inspection region."""
        self._drawing = True
        self.setCursor(Qt.CursorShape.CrossCursor)

    def is_drawing(self) -> bool:
        return self._drawing

    def cancel_drawing(self) -> None:
        self._drawing = False
        self._drag_start = self._drag_now = None
        self.unsetCursor()
        self.update()

    # -- geometry ----------------------------------------------------------------

    def _target_rect(self) -> QRectF | None:
        if self._image is None:
            return None
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def widget_to_frame(self, p: QPointF) -> tuple[float, float] | None:
        rect = self._target_rect()
        if rect is None or self._frame_size is None:
            return None
        fw, fh = self._frame_size
        x = (p.x() - rect.x()) / rect.width() * fw
        y = (p.y() - rect.y()) / rect.height() * fh
        return min(max(x, 0.0), fw), min(max(y, 0.0), fh)

    def frame_to_widget(self, x: float, y: float) -> QPointF:
        rect = self._target_rect()
        fw, fh = self._frame_size
        return QPointF(rect.x() + x / fw * rect.width(), rect.y() + y / fh * rect.height())

    # -- events ------------------------------------------------------------------

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(32, 32, 32))
        rect = self._target_rect()
        if rect is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(rect, self._image)
            if self._show_roi:
                for roi, name in self._regions:
                    self._draw_roi(p, roi, QColor(80, 200, 80), name)
            if self._drag_start is not None and self._drag_now is not None:
                p.setPen(QPen(QColor(255, 220, 0), 2, Qt.PenStyle.DashLine))
                p.drawRect(QRectF(self._drag_start, self._drag_now).normalized())
        elif self._message:
            p.setPen(QColor(220, 220, 220))
            f = QFont(self.font())
            f.setPointSizeF(f.pointSizeF() * 1.3)
            p.setFont(f)
            p.drawText(self.rect().adjusted(20, 20, -20, -20), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self._message)
        if self._banner:
            band = QRectF(0, 0, self.width(), 36)
            p.fillRect(band, QColor(200, 40, 40, 220))
            p.setPen(QColor(255, 255, 255))
            f = QFont(self.font())
            f.setBold(True)
            p.setFont(f)
            p.drawText(band, Qt.AlignmentFlag.AlignCenter, self._banner)
        p.end()

    def _draw_roi(self, p: QPainter, roi: Roi, colour: QColor, name: str = "") -> None:
        if self._frame_size is None:
            return
        a = self.frame_to_widget(roi.x, roi.y)
        b = self.frame_to_widget(roi.x + roi.w, roi.y + roi.h)
        p.setPen(QPen(colour, 2))
        p.drawRect(QRectF(a, b))
        if name:
            p.drawText(QRectF(a.x() + 4, a.y() + 2, max(0.0, b.x() - a.x() - 8), 18),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, name)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self._drawing and event.button() == Qt.MouseButton.LeftButton and self._image is not None:
            self._drag_start = self._drag_now = event.position()
            self.update()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is not None:
            self._drag_now = event.position()
            self.update()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is None:
            return super().mouseReleaseEvent(event)
        a = self.widget_to_frame(self._drag_start)
        b = self.widget_to_frame(event.position())
        self.cancel_drawing()
        if a is None or b is None:
            return
        x1, x2 = sorted((a[0], b[0]))
        y1, y2 = sorted((a[1], b[1]))
        if x2 - x1 < 8 or y2 - y1 < 8:  # a click, not a region
            return
        roi = Roi(int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1)))
        self.roi_drawn.emit(roi)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Escape and self._drawing:
            self.cancel_drawing()
        else:
            super().keyPressEvent(event)
