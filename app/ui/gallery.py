"""QA's defect gallery: filter logged inspections, look closely, confirm or correct them."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import datetime, time, timedelta
from pathlib import Path

import cv2
from PySide6.QtCore import QDate, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDoubleSpinBox,
    QFileDialog,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.audit_view import describe_audit
from app.review import ReviewService
from app.store import GALLERY_SORTS, DetectionRow, GalleryFilter, InspectionLog, ReviewBoxRow, StoreError
from app.training_export import TrainingExport, export_reviewed
from app.ui.image_view import to_qimage
from app.users import User
from app.verdict import FAIL, PASS

PAGE_SIZE = 48
THUMB = 160
ANY = "any"
AUDIT_COLUMNS = ("when", "who", "what", "old → new", "reason")
EXPORT_LINES_SHOWN = 20  # skipped inspections listed in the export's message box itself


def thumbnail(path) -> QIcon:
    """A small icon of a saved picture; decoded at reduced size to keep paging fast."""
    img = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2) if path else None
    if img is None:
        pm = QPixmap(THUMB, THUMB)
        pm.fill(QColor(60, 60, 60))
        return QIcon(pm)
    h, w = img.shape[:2]
    s = THUMB / max(h, w)
    img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    return QIcon(QPixmap.fromImage(to_qimage(img)))



PICTURE_READ_TIMEOUT_S = 3.0


def read_picture(path: Path | None, timeout: float | None = None) -> bytes | None:
    """A saved picture's bytes, or None when it is missing, unreadable or not read within `timeout`
    (default PICTURE_READ_TIMEOUT_S).

    Pictures may lie on a network share (the plant's picture store): a hung mount blocks a read in the
    kernel, so the read runs on a daemon thread and the window gives up on it instead of freezing.
    """
    if path is None:
        return None
    result: list[bytes | None] = [None]

    def read() -> None:
        try:
            result[0] = Path(path).read_bytes()
        except OSError:
            pass

    reader = threading.Thread(target=read, name="picture read", daemon=True)
    reader.start()
    reader.join(PICTURE_READ_TIMEOUT_S if timeout is None else timeout)
    return None if reader.is_alive() else result[0]


class ZoomView(QGraphicsView):
    """The inspected frame at full resolution: wheel zooms, drag pans, or draws a box when asked."""

    box_drawn = Signal(tuple)  # (x1, y1, x2, y2) frame pixels

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self._drawing = False
        self._start = None
        self._rubber: QGraphicsRectItem | None = None
        self._fit = True  # keep the whole frame in view until the user zooms

    def show_frame(self, pixmap: QPixmap, boxes: list[tuple[tuple[float, float, float, float], QColor, bool]]) -> None:
        """`boxes`: (box, colour, dashed) in frame pixels."""
        scene = self.scene()
        scene.clear()
        self._rubber = None
        scene.addItem(QGraphicsPixmapItem(pixmap))
        scene.setSceneRect(QRectF(pixmap.rect()))
        width = max(1.0, pixmap.width() / 400)
        for (x1, y1, x2, y2), colour, dashed in boxes:
            pen = QPen(colour, width, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
            pen.setCosmetic(False)
            scene.addRect(QRectF(x1, y1, x2 - x1, y2 - y1), pen, QBrush(Qt.BrushStyle.NoBrush))
        self._fit = True
        self.resetTransform()
        self.fitInView(scene.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fit:
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        self._fit = False
        self.scale(factor, factor)

    def wheelEvent(self, event) -> None:  # noqa: N802
        self.zoom(1.25 if event.angleDelta().y() > 0 else 0.8)

    def start_box(self) -> None:
        self._drawing = True
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self._drawing and event.button() == Qt.MouseButton.LeftButton:
            self._start = self.mapToScene(event.position().toPoint())
            self._rubber = self.scene().addRect(QRectF(self._start, self._start), QPen(QColor(255, 220, 0), 0))
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._start is not None and self._rubber is not None:
            self._rubber.setRect(QRectF(self._start, self.mapToScene(event.position().toPoint())).normalized())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._start is not None:
            end = self.mapToScene(event.position().toPoint())
            r = QRectF(self._start, end).normalized()
            self._start = None
            self._drawing = False
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
            self.unsetCursor()
            self.box_drawn.emit((r.left(), r.top(), r.right(), r.bottom()))
            return
        super().mouseReleaseEvent(event)


class GalleryWidget(QWidget):
    def __init__(self, store: InspectionLog, user: User, colours: dict[str, str] | None = None, parent=None):
        super().__init__(parent)
        self.store = store
        self.user = user
        self.colours = dict(colours or {})
        self.service = ReviewService(store, user)
        self.page = 0
        self.total = 0
        self.current_id: int | None = None
        self.picture_shown = False  # whether the shown inspection's saved picture could be read

        # Filters
        self.from_check = QCheckBox("from")
        self.from_date = QDateEdit(QDate.currentDate().addDays(-7))
        self.to_check = QCheckBox("to")
        self.to_date = QDateEdit(QDate.currentDate())
        for d in (self.from_date, self.to_date):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
        self.verdict_combo = QComboBox()
        self.verdict_combo.addItems([ANY, PASS, FAIL])
        self.reviewed_combo = QComboBox()
        self.reviewed_combo.addItems([ANY, "reviewed", "not reviewed"])
        self.class_combo = QComboBox()
        self.operator_combo = QComboBox()
        self.part_edit = QLineEdit()
        self.part_edit.setPlaceholderText("part ID contains…")
        self.min_score = QDoubleSpinBox()
        self.max_score = QDoubleSpinBox()
        for s, v in ((self.min_score, 0.0), (self.max_score, 1.0)):
            s.setRange(0.0, 1.0)
            s.setSingleStep(0.05)
            s.setValue(v)
        self.sort_combo = QComboBox()
        self.sort_combo.addItems(list(GALLERY_SORTS))
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_filters)
        self.part_edit.returnPressed.connect(self.apply_filters)
        for w in (self.verdict_combo, self.reviewed_combo, self.class_combo, self.operator_combo, self.sort_combo):
            w.currentIndexChanged.connect(self.apply_filters)

        grid = QGridLayout()
        row = [(self.from_check, self.from_date), (self.to_check, self.to_date), (QLabel("verdict"), self.verdict_combo),
               (QLabel("QA"), self.reviewed_combo), (QLabel("class"), self.class_combo)]
        for col, (a, b) in enumerate(row):
            grid.addWidget(a, 0, 2 * col)
            grid.addWidget(b, 0, 2 * col + 1)
        row = [(QLabel("operator"), self.operator_combo), (QLabel("part"), self.part_edit), (QLabel("score ≥"), self.min_score),
               (QLabel("≤"), self.max_score), (QLabel("sort"), self.sort_combo)]
        for col, (a, b) in enumerate(row):
            grid.addWidget(a, 1, 2 * col)
            grid.addWidget(b, 1, 2 * col + 1)
        grid.addWidget(self.apply_button, 0, 10)
        self.export_button = QPushButton("Export training set…")
        self.export_button.setToolTip("Export the reviewed inspections of this filter as a COCO training set")
        self.export_button.clicked.connect(self._export_dialog)
        self.export_box: QMessageBox | None = None  # the last export's report
        grid.addWidget(self.export_button, 1, 10)

        # Thumbnails and paging
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListWidget.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(THUMB, THUMB))
        self.thumbs.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.thumbs.setMovement(QListWidget.Movement.Static)
        self.thumbs.setUniformItemSizes(True)
        self.thumbs.currentItemChanged.connect(self._on_thumb)
        self.prev_button = QPushButton("◀")
        self.next_button = QPushButton("▶")
        self.prev_button.clicked.connect(lambda: self.go_to_page(self.page - 1))
        self.next_button.clicked.connect(lambda: self.go_to_page(self.page + 1))
        self.count_label = QLabel()
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.count_label, 1)
        nav.addWidget(self.next_button)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.thumbs, 1)
        lv.addLayout(nav)

        # Detail
        self.view = ZoomView()
        self.view.box_drawn.connect(self._on_box_drawn)
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.boxes_table = QTableWidget(0, 5)
        self.boxes_table.setHorizontalHeaderLabels(["class", "score", "size px", "box", "QA"])
        self.boxes_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.boxes_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.reason_edit = QLineEdit()
        self.reason_edit.setPlaceholderText("reason (required for every change)")
        self.confirm_button = QPushButton("Confirm verdict")
        self.pass_button = QPushButton("Set PASS")
        self.fail_button = QPushButton("Set FAIL")
        self.fp_button = QPushButton("Selected box: false positive")
        self.missed_class = QComboBox()
        self.missed_button = QPushButton("Draw missed defect")
        self.confirm_button.clicked.connect(lambda: self._review(lambda r: self.service.set_verdict(
            self.current_id, self.service.state(self.current_id).effective_verdict, r)))
        self.pass_button.clicked.connect(lambda: self._review(lambda r: self.service.set_verdict(self.current_id, PASS, r)))
        self.fail_button.clicked.connect(lambda: self._review(lambda r: self.service.set_verdict(self.current_id, FAIL, r)))
        self.fp_button.clicked.connect(self._mark_false_positive)
        self.missed_button.clicked.connect(self._start_missed)
        self.zoom_in = QPushButton("+")
        self.zoom_out = QPushButton("−")
        self.zoom_in.clicked.connect(lambda: self.view.zoom(1.25))
        self.zoom_out.clicked.connect(lambda: self.view.zoom(0.8))
        self.history = QTableWidget(0, len(AUDIT_COLUMNS))
        self.history.setHorizontalHeaderLabels(list(AUDIT_COLUMNS))
        self.history.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.history.setWordWrap(True)
        self.history.verticalHeader().setVisible(False)
        header = self.history.horizontalHeader()
        for col in range(len(AUDIT_COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)  # the reason takes the room left and wraps: nothing scrolls off to the right
        self.message = QLabel()
        self.message.setWordWrap(True)

        actions = QGridLayout()
        actions.addWidget(self.reason_edit, 0, 0, 1, 3)
        actions.addWidget(self.confirm_button, 1, 0)
        actions.addWidget(self.pass_button, 1, 1)
        actions.addWidget(self.fail_button, 1, 2)
        actions.addWidget(self.fp_button, 2, 0)
        actions.addWidget(self.missed_class, 2, 1)
        actions.addWidget(self.missed_button, 2, 2)
        zoom = QHBoxLayout()
        zoom.addWidget(QLabel("zoom"))
        zoom.addWidget(self.zoom_in)
        zoom.addWidget(self.zoom_out)
        zoom.addStretch(1)
        detail = QWidget()
        dv = QVBoxLayout(detail)
        dv.addWidget(self.view, 3)
        dv.addLayout(zoom)
        dv.addWidget(self.info_label)
        dv.addWidget(self.boxes_table, 1)
        dv.addLayout(actions)
        dv.addWidget(self.message)
        dv.addWidget(QLabel("Audit trail:"))
        dv.addWidget(self.history, 1)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(splitter, 1)

        can_review = user.can("review")  # QA and admins; they also export what they reviewed
        for w in (self.reason_edit, self.confirm_button, self.pass_button, self.fail_button, self.fp_button,
                  self.missed_class, self.missed_button, self.export_button):
            w.setEnabled(can_review)
        self.refresh_choices()
        self.apply_filters()

    # -- filters and pages --------------------------------------------------------

    def refresh_choices(self) -> None:
        present = self.store.labels()
        for combo, values in ((self.class_combo, present), (self.operator_combo, self.store.operators())):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ANY, *values])
            combo.setCurrentText(current or ANY)
            combo.blockSignals(False)
        labels = list(dict.fromkeys([*self.colours, *present]))
        self.missed_class.clear()
        self.missed_class.addItems(labels)

    def current_filter(self) -> GalleryFilter:
        def day_start(d: QDate) -> datetime:
            return datetime.combine(d.toPython(), time()).astimezone()

        reviewed = {"reviewed": True, "not reviewed": False}.get(self.reviewed_combo.currentText())
        lo, hi = self.min_score.value(), self.max_score.value()
        return GalleryFilter(
            start=day_start(self.from_date.date()) if self.from_check.isChecked() else None,
            end=day_start(self.to_date.date()) + timedelta(days=1) if self.to_check.isChecked() else None,
            verdict=None if self.verdict_combo.currentText() == ANY else self.verdict_combo.currentText(),
            label=None if self.class_combo.currentText() in (ANY, "") else self.class_combo.currentText(),
            operator=None if self.operator_combo.currentText() in (ANY, "") else self.operator_combo.currentText(),
            part_id=self.part_edit.text().strip() or None,
            reviewed=reviewed,
            min_score=lo if lo > 0 else None,
            max_score=hi if hi < 1 else None,
        )

    def apply_filters(self) -> None:
        self.total = self.store.gallery_count(self.current_filter())
        self.go_to_page(0)

    def go_to_page(self, page: int) -> None:
        pages = max(1, -(-self.total // PAGE_SIZE))
        self.page = min(max(0, page), pages - 1)
        rows = self.store.gallery_page(self.current_filter(), self.sort_combo.currentText(), self.page, PAGE_SIZE)
        self.thumbs.clear()
        for r in rows:
            qa = f" → QA {r.qa_verdict}" if r.qa_verdict else ""
            item = QListWidgetItem(thumbnail(self.store.resolve(r.annotated_path)), f"#{r.id} {r.verdict}{qa}\n{r.part_id or '—'}")
            item.setData(Qt.ItemDataRole.UserRole, r.id)
            item.setForeground(QColor("#c62828") if (r.qa_verdict or r.verdict) == FAIL else QColor("#2e7d32"))
            self.thumbs.addItem(item)
        self.count_label.setText(f"{self.total} inspections — page {self.page + 1} of {pages}")
        self.prev_button.setEnabled(self.page > 0)
        self.next_button.setEnabled(self.page < pages - 1)

    # -- detail ---------------------------------------------------------------------

    def _on_thumb(self, item: QListWidgetItem | None, _prev=None) -> None:
        if item is not None:
            self.show_inspection(item.data(Qt.ItemDataRole.UserRole))

    def show_inspection(self, inspection_id: int) -> None:
        self.current_id = inspection_id
        st = self.service.state(inspection_id)
        insp = st.inspection
        data = read_picture(self.store.resolve(insp.image_path))
        pm = QPixmap()
        self.picture_shown = data is not None and pm.loadFromData(data)
        if not self.picture_shown:
            pm = QPixmap(max(1, insp.frame_w), max(1, insp.frame_h))
            pm.fill(QColor(60, 60, 60))
        boxes = []
        self.boxes_table.setRowCount(0)
        for d in insp.detections:
            if not d.shown:
                continue
            fp = d.id in st.false_positive_ids
            colour = QColor(128, 128, 128) if fp else QColor(self.colours.get(d.label, "#CC79A7"))
            boxes.append((d.box, colour, fp))
            self._add_box_row(d, "false positive" if fp else ("fails" if d.fails else ""))
        for m in st.missed:
            boxes.append((m.box, QColor(self.colours.get(m.label, "#CC79A7")), True))
            self._add_box_row(m, "missed (added by QA)")
        if len(insp.regions) > 1:  # each region outlined in its verdict's colour
            for r in insp.regions:
                roi = r.roi
                boxes.append(((roi.x, roi.y, roi.x + roi.w, roi.y + roi.h),
                              QColor("#c62828" if r.verdict == FAIL else "#2e7d32"), False))
        self.view.show_frame(pm, boxes)
        qa = f"QA: <b>{st.qa_verdict}</b>" if st.qa_verdict else "QA: not reviewed"
        recipe = f" · recipe {insp.recipe} v{insp.recipe_version}" if insp.recipe else ""
        regions = ("<br>regions: " + " · ".join(f"{r.name} <b>{r.verdict}</b>" for r in insp.regions)
                   if len(insp.regions) > 1 else "")
        trigger = f" · {insp.trigger}" + (f" job {insp.job_id}" if insp.job_id else "")
        self.info_label.setText(
            f"#{insp.id} · {insp.created_at} · station {insp.station} · operator {insp.operator or '—'} · "
            f"part {insp.part_id or '—'}{trigger}<br>station verdict <b>{insp.verdict}</b> at threshold {insp.threshold:.2f}"
            f"{recipe} · {qa} · model {insp.model_id}{regions}")
        self.history.setRowCount(0)
        for h in st.history:
            row = self.history.rowCount()
            self.history.insertRow(row)
            a = describe_audit(asdict(h))
            for col, text in enumerate((a.when, a.who, a.what, a.change, a.reason)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.history.setItem(row, col, item)
        self.history.resizeRowsToContents()

    def _add_box_row(self, box: DetectionRow | ReviewBoxRow, status: str) -> None:
        """A detection (its id kept on the row, for marking it a false positive) or a box QA added."""
        detection_id = box.id if isinstance(box, DetectionRow) else None
        score = f"{box.score:.2f}" if isinstance(box, DetectionRow) else "—"
        row = self.boxes_table.rowCount()
        self.boxes_table.insertRow(row)
        x1, y1, x2, y2 = box.box
        cells = [box.label, score, f"{x2 - x1:.0f}×{y2 - y1:.0f}", f"({x1:.0f}, {y1:.0f})–({x2:.0f}, {y2:.0f})", status]
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, detection_id)
            self.boxes_table.setItem(row, col, item)

    # -- review ---------------------------------------------------------------------

    def _review(self, action) -> bool:
        if self.current_id is None:
            self.message.setText("Pick an inspection first.")
            return False
        try:
            action(self.reason_edit.text())
        except (ValueError, PermissionError) as exc:
            self.message.setText(f"<span style='color:#c62828'>{exc}</span>")
            return False
        self.message.setText("Saved.")
        self.reason_edit.clear()
        current = self.current_id
        self.go_to_page(self.page)
        self.show_inspection(current)
        return True

    def _mark_false_positive(self) -> None:
        rows = {i.row() for i in self.boxes_table.selectedIndexes()}
        if len(rows) != 1:
            self.message.setText("Select one detected box in the table first.")
            return
        detection_id = self.boxes_table.item(rows.pop(), 0).data(Qt.ItemDataRole.UserRole)
        if detection_id is None:
            self.message.setText("That box was added by QA; only detections can be false positives.")
            return
        self._review(lambda r: self.service.mark_false_positive(self.current_id, detection_id, r))

    def _start_missed(self) -> None:
        if self.current_id is None:
            self.message.setText("Pick an inspection first.")
            return
        if not self.reason_edit.text().strip():
            self.message.setText("Type the reason first, then draw the box.")
            return
        self.message.setText(f"Drag a box around the missed {self.missed_class.currentText()} on the picture.")
        self.view.start_box()

    def _on_box_drawn(self, box: tuple) -> None:
        label = self.missed_class.currentText()
        self._review(lambda r: self.service.add_missed(self.current_id, label, box, r))

    # -- back to training -------------------------------------------------------------

    def _export_dialog(self) -> None:
        out = QFileDialog.getExistingDirectory(self, "Export training set into folder")
        if out:
            self.export_training_set(out)

    def export_training_set(self, out_dir) -> TrainingExport | None:
        """Export the reviewed inspections of the current filter and say what happened (a message box, not modal)."""
        try:
            result = export_reviewed(self.store, out_dir, self.current_filter())
        except (StoreError, OSError, ValueError) as exc:
            self._report_export(QMessageBox.Icon.Warning, f"Nothing exported: {exc}", [])
            return None
        head, *rest = result.lines()
        icon = QMessageBox.Icon.Information if result.exported and not result.skipped else QMessageBox.Icon.Warning
        self._report_export(icon, head[:1].upper() + head[1:] + ".", rest)
        return result

    def _report_export(self, icon: QMessageBox.Icon, text: str, lines: list[str]) -> None:
        self.message.setText(text)
        if self.export_box is not None:
            self.export_box.close()
        box = self.export_box = QMessageBox(icon, "Export training set", text, QMessageBox.StandardButton.Ok, self)
        shown = lines[:EXPORT_LINES_SHOWN]
        if len(lines) > len(shown):  # the whole list behind "Show Details…", the box stays on screen
            shown.append(f"… and {len(lines) - len(shown)} more (Show Details)")
            box.setDetailedText("\n".join(lines))
        box.setInformativeText("\n".join(shown))
        box.open()
