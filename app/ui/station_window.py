"""The operator screen: live picture, Inspect, overlay, PASS/FAIL, log.

Capture runs on the feed's thread and inference on a worker thread; the GUI
thread only polls the newest frame and paints, so the window never freezes
and a slow model drops frames instead of queueing them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSlider,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.inspection import DETECTION_FLOOR, InspectionResult, Inspector
from app.overlay import as_bgr
from app.review import record_setting_change
from app.roi import Roi
from app.settings import StationSettings, save_settings
from app.sources import RECONNECTING, FrameSource, ImageFilesSource, LiveFeed, SourceError, open_source
from app.store import InspectionStore, StoreError
from app.users import SETUP_USER, User
from detector import Detector

POLL_MS = 30  # GUI refresh of the live picture (~33 Hz)
NO_CAMERA_HINT = (
    "No camera found.\n\nThe station is in file mode: open pictures, a folder or a video with "
    "File ▸ Open (Ctrl+O, Ctrl+Shift+O), or set a camera or stream in Settings (Ctrl+,)."
)
VERDICT_STYLE = {
    "PASS": "background:#2e7d32; color:white;",
    "FAIL": "background:#c62828; color:white;",
    None: "background:#424242; color:#bdbdbd;",
}


class InspectionRunner(QObject):
    """Runs one inspection at a time on a worker thread; results come back as signals."""

    finished = Signal(object)  # InspectionResult
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(self, inspector: Inspector, frame: np.ndarray, **kwargs) -> bool:
        """Start an inspection; False (and nothing queued) if one is still running."""
        if self._busy.is_set():
            return False
        self._busy.set()
        self._thread = threading.Thread(target=self._run, args=(inspector, frame, kwargs), daemon=True,
                                        name="inspection")
        self._thread.start()
        return True

    def wait(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, inspector: Inspector, frame: np.ndarray, kwargs: dict) -> None:
        try:
            result = inspector.inspect(frame, **kwargs)
        except ValueError as exc:  # bad frame or region: tell the operator, keep running
            self._busy.clear()
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # never let a model failure take the station down
            self._busy.clear()
            self.failed.emit(f"inspection failed: {type(exc).__name__}: {exc}")
            return
        self._busy.clear()
        self.finished.emit(result)


class StationWindow(QMainWindow):
    def __init__(self, settings: StationSettings, config_path: Path | None = None, warnings: list[str] | None = None,
                 detector: Detector | None = None, user: User = SETUP_USER):
        super().__init__()
        self.settings = settings
        self.user = user
        self.gallery = None  # built when first shown
        self.reports = None
        self.config_path = config_path
        self.setWindowTitle(f"Inspection station — {settings.station_name}")
        self.detector: Detector | None = detector
        self.store: InspectionStore | None = None
        self.inspector: Inspector | None = None
        self.feed: LiveFeed | None = None
        self.last_result: InspectionResult | None = None
        self.inspections_done = 0
        self._holding_result = False  # the view shows the last result, not the live picture
        self._shown_seq = -1
        self._submitted_seq = -1
        self._probing_camera = False
        self._problems: list[str] = list(warnings or [])
        self._click_time: float | None = None
        self.last_click_to_verdict_ms: float | None = None

        self.runner = InspectionRunner(self)
        self.runner.finished.connect(self._on_result)
        self.runner.failed.connect(self._on_inspection_failed)

        self._build_ui()
        self._load_model_and_store()
        self._open_configured_source()

        self._timer = QTimer(self)
        self._timer.timeout.connect(self._poll)
        self._timer.start(POLL_MS)
        self._show_problems()

    # -- construction -------------------------------------------------------------

    def _build_ui(self) -> None:
        from app.ui.image_view import ImageView

        self.view = ImageView()
        self.view.roi_drawn.connect(self._on_roi_drawn)

        self.verdict_label = QLabel("—")
        self.verdict_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = self.verdict_label.font()
        f.setPointSize(40)
        f.setBold(True)
        self.verdict_label.setFont(f)
        self.verdict_label.setMinimumHeight(110)
        self._set_verdict(None)

        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)

        self.part_edit = QLineEdit()
        self.part_edit.setPlaceholderText("type or scan, Enter inspects")
        self.part_edit.returnPressed.connect(self.inspect_now)
        self.operator_edit = QLineEdit(self.settings.operator)
        self.operator_edit.setPlaceholderText("operator name or badge")
        self.operator_edit.editingFinished.connect(self._on_operator_changed)

        self.inspect_button = QPushButton("Inspect  (Space / F5)")
        self.inspect_button.setMinimumHeight(64)
        bf = self.inspect_button.font()
        bf.setPointSize(bf.pointSize() + 6)
        bf.setBold(True)
        self.inspect_button.setFont(bf)
        self.inspect_button.clicked.connect(self.inspect_now)

        self.continuous_check = QCheckBox("Continuous (inspect every frame)")
        self.continuous_check.setChecked(self.settings.continuous)
        self.continuous_check.toggled.connect(self._on_continuous_toggled)
        self.live_button = QPushButton("Live view  (Esc)")
        self.live_button.clicked.connect(self.back_to_live)

        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(int(DETECTION_FLOOR * 100), 99)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(DETECTION_FLOOR, 0.99)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setDecimals(2)
        self.threshold_slider.valueChanged.connect(lambda v: self._set_threshold(v / 100.0))
        self.threshold_spin.valueChanged.connect(self._set_threshold)

        self.roi_button = QPushButton("Draw region")
        self.roi_button.setToolTip("Drag a rectangle on the picture: only that region is inspected")
        self.roi_button.clicked.connect(self._start_roi)
        self.roi_clear_button = QPushButton("Whole frame")
        self.roi_clear_button.clicked.connect(lambda: self._set_roi(None))
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.prev_button.clicked.connect(lambda: self._step(-1))
        self.next_button.clicked.connect(lambda: self._step(1))

        self.detections_list = QListWidget()
        self.detections_list.setMinimumHeight(120)

        side = QWidget()
        col = QVBoxLayout(side)
        col.addWidget(self.verdict_label)
        col.addWidget(self.inspect_button)
        ids = QFormLayout()
        ids.addRow("Part / serial", self.part_edit)
        ids.addRow("Operator", self.operator_edit)
        col.addLayout(ids)
        thr = QGroupBox("Confidence threshold")
        tl = QHBoxLayout(thr)
        tl.addWidget(self.threshold_slider, 1)
        tl.addWidget(self.threshold_spin)
        col.addWidget(thr)
        col.addWidget(self.continuous_check)
        row = QHBoxLayout()
        row.addWidget(self.roi_button)
        row.addWidget(self.roi_clear_button)
        col.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.prev_button)
        row.addWidget(self.next_button)
        row.addWidget(self.live_button)
        col.addLayout(row)
        col.addWidget(QLabel("Defects (click Inspect to log):"))
        col.addWidget(self.detections_list, 1)
        col.addWidget(self.legend)

        splitter = QSplitter()
        splitter.addWidget(self.view)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        side.setMinimumWidth(300)
        self.tabs = QTabWidget()
        self.tabs.addTab(splitter, "Inspect")
        # Gallery and reports are built on first view: they query the log.
        self._gallery_tab = QWidget()
        self._reports_tab = QWidget()
        for tab in (self._gallery_tab, self._reports_tab):
            QVBoxLayout(tab).setContentsMargins(0, 0, 0, 0)
        if self.user.can("gallery"):
            self.tabs.addTab(self._gallery_tab, "Gallery (QA)")
        if self.user.can("reports"):
            self.tabs.addTab(self._reports_tab, "Reports")
        self.tabs.currentChanged.connect(self._on_tab)
        self.setCentralWidget(self.tabs)
        if self.user is not SETUP_USER:
            self.operator_edit.setText(self.user.name)
            self.operator_edit.setReadOnly(True)  # inspections are logged under who signed in

        self.source_label = QLabel()
        self.fps_label = QLabel()
        self.ms_label = QLabel()
        self.log_label = QLabel()
        self.user_label = QLabel(f"{self.user.name} ({self.user.role})")
        for w in (self.source_label, self.fps_label, self.ms_label, self.log_label, self.user_label):
            self.statusBar().addPermanentWidget(w)

        self._build_menu()
        for key in ("Space", "F5"):
            sc = QShortcut(QKeySequence(key), self)
            sc.activated.connect(self.inspect_now)
        QShortcut(QKeySequence("Esc"), self).activated.connect(self._on_escape)
        QShortcut(QKeySequence("PgDown"), self).activated.connect(lambda: self._step(1))
        QShortcut(QKeySequence("PgUp"), self).activated.connect(lambda: self._step(-1))

        threshold = self.settings.threshold
        self._apply_threshold_widgets(threshold if threshold is not None else 0.3)
        self.view.set_roi(self.settings.roi)

    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        for text, key, slot in (
            ("Open &pictures…", "Ctrl+O", self._choose_pictures),
            ("Open picture &folder…", "Ctrl+Shift+O", self._choose_folder),
            ("Open &video…", None, self._choose_video),
            ("&Camera or stream…", None, self._choose_camera),
        ):
            a = QAction(text, self)
            if key:
                a.setShortcut(QKeySequence(key))
            a.triggered.connect(slot)
            m.addAction(a)
        m.addSeparator()
        a = QAction("&Settings…", self)
        a.setShortcut(QKeySequence("Ctrl+,"))
        a.triggered.connect(self.open_settings)
        a.setEnabled(self.user.can("settings"))  # rules and models are the admin's
        m.addAction(a)
        self.settings_action = a
        a = QAction("&Users and roles…", self)
        a.triggered.connect(self.open_users)
        a.setEnabled(self.user.can("users"))
        m.addAction(a)
        self.users_action = a
        m.addSeparator()
        a = QAction("&Quit", self)
        a.setShortcut(QKeySequence("Ctrl+Q"))
        a.triggered.connect(self.close)
        m.addAction(a)

    def _load_model_and_store(self) -> None:
        if self.detector is None or (self.settings.model_path and Path(self.settings.model_path) != self.detector.model_path):
            try:
                self.detector = Detector(self.settings.model_path)
            except (ValueError, FileNotFoundError, OSError) as exc:
                self.detector = None
                self._problems.append(f"Model not loaded: {exc}\nFix the model path in Settings.")
        if self.store is not None:
            self.store.close()
            self.store = None
        try:
            self.store = InspectionStore(self.settings.db_path, min_free_bytes=int(self.settings.min_free_mb * 1e6))
        except StoreError as exc:
            self._problems.append(f"Inspection log unavailable: {exc}\nInspections are NOT logged until this is fixed.")
        if self.detector is not None:
            self.inspector = Inspector(self.detector, self.store, self.settings.station_name, self.settings.rule,
                                       self.settings.keep_pictures)
            meta = self.detector.metadata
            swatches = " ".join(
                f"<span style='background:{meta.colours.get(c, '#CC79A7')}; color:white; padding:2px 6px;'>&nbsp;{c}&nbsp;</span>"
                for c in meta.class_names
            )
            self.legend.setText(f"{swatches}<br><small>model {self.detector.model_id}</small>")
            if self.settings.threshold is None:
                self._apply_threshold_widgets(meta.default_threshold)
        else:
            self.inspector = None
            self.legend.setText("<b>no model loaded</b>")
        self.inspect_button.setEnabled(self.inspector is not None)

    def _show_problems(self) -> None:
        if self._problems:
            text = "\n\n".join(self._problems)
            self._problems = []
            self.statusBar().showMessage(text.splitlines()[0], 15000)
            box = QMessageBox(QMessageBox.Icon.Warning, "Inspection station", text, QMessageBox.StandardButton.Ok, self)
            box.setModal(False)
            box.show()
            self._problem_box = box  # kept so tests and screenshots can close it

    # -- sources ----------------------------------------------------------------

    def _open_configured_source(self) -> None:
        spec = self.settings.source
        if not spec:
            # First start: try the first camera; without one the station opens in file mode.
            self._probing_camera = True
            spec = "0"
        self.open_source(spec, remember=False)

    def open_source(self, spec: str, remember: bool = True) -> bool:
        """Switch to another source; on failure keep the current one and say why."""
        try:
            source: FrameSource = open_source(spec, loop_video=True)
        except SourceError as exc:
            self._probing_camera = False
            self.statusBar().showMessage(f"Cannot open {spec}: {exc}", 10000)
            return False
        self.use_source(source)
        if remember:
            self._probing_camera = False
            self._update_settings(source=spec)
        return True

    def use_source(self, source: FrameSource) -> None:
        """Show frames from `source` from now on (the previous feed stops)."""
        if self.feed is not None:
            self.feed.stop(timeout=0.5)
        self.feed = LiveFeed(source, reconnect_seconds=self.settings.reconnect_seconds).start()
        self._shown_seq = self._submitted_seq = -1
        self._holding_result = False
        self.view.set_message("Connecting to " + source.name + "…")
        self.view.set_banner("")
        is_pictures = isinstance(source, ImageFilesSource)
        self.prev_button.setEnabled(is_pictures)
        self.next_button.setEnabled(is_pictures)

    def _step(self, delta: int) -> None:
        if self.feed is not None and isinstance(self.feed.source, ImageFilesSource):
            self._holding_result = False
            self.feed.step(delta)

    def _choose_pictures(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open pictures", "", "Pictures (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if files:
            self.open_source(files[0] if len(files) == 1 else str(Path(files[0]).parent))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open picture folder")
        if folder:
            self.open_source(folder)

    def _choose_video(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Open video", "", "Videos (*.mp4 *.avi *.mkv *.mov *.m4v);;All files (*)")
        if file:
            self.open_source(file)

    def _choose_camera(self) -> None:
        text, ok = QInputDialog.getText(self, "Camera or stream",
                                        "Camera number (0, 1, …) or stream URL (rtsp://…, http://…):",
                                        text=self.settings.source if not self.settings.source.startswith("/") else "0")
        if ok and text.strip():
            self.open_source(text.strip())

    # -- polling: live picture, camera state, continuous mode --------------------------

    def _poll(self) -> None:
        feed = self.feed
        if feed is None:
            return
        state = feed.state
        if state == RECONNECTING and self._probing_camera:
            self._probing_camera = False
            feed.stop(timeout=0.2)
            self.feed = None
            self.view.set_image(None)
            self.view.set_message(NO_CAMERA_HINT)
            self.source_label.setText("file mode")
            return
        if state == RECONNECTING:
            what = "Camera disconnected — reconnecting" if feed.source.live else "Source unavailable — retrying"
            self.view.set_banner(f"{what}…  ({feed.error})")
            self.source_label.setText("⚠ reconnecting")
        else:
            if self.view.banner():
                self.view.set_banner("")
            self._probing_camera = self._probing_camera and state != "live"
            src = feed.source
            if isinstance(src, ImageFilesSource) and src.files:
                self.source_label.setText(f"picture {src.index + 1}/{len(src.files)}: {src.current_file.name}")
            else:
                self.source_label.setText(f"{src.name} ({state})")
        fps = feed.fps()
        self.fps_label.setText(f"camera {fps:.1f} fps" if fps else "")
        latest = feed.latest()
        if latest is None or latest.seq == self._shown_seq:
            return
        if not self._holding_result:
            self._shown_seq = latest.seq
            self.view.set_image(as_bgr(latest.frame), (latest.frame.shape[1], latest.frame.shape[0]))
        if self.continuous_check.isChecked() and not self.runner.busy and latest.seq != self._submitted_seq:
            self._submit(latest.frame, latest.seq, latest.label)

    # -- inspecting ---------------------------------------------------------------

    def inspect_now(self) -> None:
        """Inspect the newest frame (button, Space, F5, Enter in the part field)."""
        if self.inspector is None:
            self.statusBar().showMessage("No model is loaded: set a model file in Settings (Ctrl+,).", 10000)
            return
        latest = self.feed.latest() if self.feed is not None else None
        if latest is None:
            self.statusBar().showMessage("No picture to inspect yet: open a camera, video or pictures (File menu).", 8000)
            return
        self._click_time = time.perf_counter()
        if not self._submit(latest.frame, latest.seq, latest.label):
            self.statusBar().showMessage("Still inspecting the previous frame…", 2000)

    def _submit(self, frame: np.ndarray, seq: int, label: str) -> bool:
        if self.inspector is None:
            return False
        ok = self.runner.submit(
            self.inspector, frame, roi=self.settings.roi, threshold=self.threshold, source=label,
            operator=self.operator_edit.text().strip(), part_id=self.part_edit.text().strip(),
        )
        if ok:
            self._submitted_seq = seq
            self.inspect_button.setText("Inspecting…")
        return ok

    def _on_result(self, result: InspectionResult) -> None:
        self.last_result = result
        self.inspections_done += 1
        self._holding_result = True
        self.inspect_button.setText("Inspect  (Space / F5)")
        self._render_result()
        if self._click_time is not None:
            self.last_click_to_verdict_ms = (time.perf_counter() - self._click_time) * 1000.0
            self._click_time = None
        self.ms_label.setText(f"inference {result.inference_ms:.0f} ms")
        if result.error:
            self.log_label.setText("⚠ NOT LOGGED")
            self.statusBar().showMessage(f"Inspection NOT logged: {result.error}", 20000)
        else:
            self.log_label.setText(f"logged #{result.inspection_id}" if result.inspection_id else "not logged")
            if result.warnings:
                self.statusBar().showMessage("; ".join(result.warnings), 15000)
        if not self.continuous_check.isChecked():
            self.part_edit.selectAll()  # the next scan replaces the serial

    def _on_inspection_failed(self, message: str) -> None:
        self._click_time = None
        self.inspect_button.setText("Inspect  (Space / F5)")
        self.statusBar().showMessage(message, 15000)
        self._set_verdict(None)
        self.verdict_label.setText("ERROR")

    def _render_result(self) -> None:
        r = self.last_result
        if r is None or self.inspector is None:
            return
        verdict = r.rejudged(self.threshold, self.inspector.rule)
        overlay = self.inspector.annotate(r, verdict, badge=False)  # the big label shows the verdict
        self.view.set_image(overlay, (r.frame.shape[1], r.frame.shape[0]), show_roi=False)
        self._set_verdict(verdict.verdict)
        self.detections_list.clear()
        for i in verdict.shown:
            d = r.detections[i]
            x1, y1, x2, y2 = d.box
            item = QListWidgetItem(f"{d.label}  {d.score:.2f}   {x2 - x1:.0f}×{y2 - y1:.0f} px at ({x1:.0f}, {y1:.0f})"
                                   + ("   ✖ fails" if i in verdict.failing else ""))
            item.setForeground(QColor(self.inspector.colours.get(d.label, "#CC79A7")))
            self.detections_list.addItem(item)
        if not verdict.shown:
            self.detections_list.addItem("no defects above the threshold")

    def shown_detections(self):
        """Detections currently drawn (for tests and the screenshot tool)."""
        r = self.last_result
        if r is None or self.inspector is None:
            return []
        return [r.detections[i] for i in r.rejudged(self.threshold, self.inspector.rule).shown]

    def _set_verdict(self, verdict: str | None) -> None:
        self.verdict_label.setText(verdict or "—")
        self.verdict_label.setStyleSheet(VERDICT_STYLE.get(verdict, VERDICT_STYLE[None]) + " border-radius:8px;")

    def back_to_live(self) -> None:
        self._holding_result = False
        self._shown_seq = -1
        self._set_verdict(None)

    def _on_escape(self) -> None:
        if self.view.is_drawing():
            self.view.cancel_drawing()
        else:
            self.back_to_live()

    def _on_continuous_toggled(self, on: bool) -> None:
        self._update_settings(continuous=on)

    # -- threshold ----------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return round(self.threshold_spin.value(), 2)

    def _apply_threshold_widgets(self, value: float) -> None:
        value = min(0.99, max(DETECTION_FLOOR, value))
        for w in (self.threshold_slider, self.threshold_spin):
            w.blockSignals(True)
        self.threshold_slider.setValue(int(round(value * 100)))
        self.threshold_spin.setValue(value)
        for w in (self.threshold_slider, self.threshold_spin):
            w.blockSignals(False)

    def _set_threshold(self, value: float) -> None:
        """Slider or box moved: re-filter the last result at once, no model run."""
        self._apply_threshold_widgets(value)
        self.settings = replace(self.settings, threshold=self.threshold)
        if self._holding_result:
            self._render_result()

    # -- region -------------------------------------------------------------------

    def _start_roi(self) -> None:
        if self.view.image() is None:
            self.statusBar().showMessage("Open a source first: the region is drawn on its picture.", 5000)
            return
        self.back_to_live()
        self.view.start_drawing()
        self.statusBar().showMessage("Drag a rectangle around the inspection region (Esc cancels).", 8000)

    def _on_roi_drawn(self, roi: Roi) -> None:
        self._set_roi(roi)

    def _set_roi(self, roi: Roi | None) -> None:
        self.view.set_roi(roi)
        self._update_settings(roi=roi)
        self.statusBar().showMessage(f"Inspection region: {roi}" if roi else "Inspection region: whole frame", 5000)

    # -- settings -----------------------------------------------------------------

    def _on_operator_changed(self) -> None:
        self._update_settings(operator=self.operator_edit.text().strip())

    def _update_settings(self, **changes) -> None:
        self.settings = replace(self.settings, **changes)
        self._save_settings()

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings, self.config_path)
        except OSError as exc:
            self.statusBar().showMessage(f"Settings not saved: {exc}", 10000)

    def open_settings(self) -> None:
        from app.ui.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.settings, self.detector.metadata.class_names if self.detector else (), self)
        if dlg.exec() != SettingsDialog.DialogCode.Accepted:
            return
        self.apply_settings(dlg.result_settings())

    def open_users(self) -> None:
        if self.store is None:
            self.statusBar().showMessage("The inspection log is unavailable, and users live in it.", 10000)
            return
        from app.ui.users_dialog import UsersDialog
        from app.users import UserDirectory

        UsersDialog(UserDirectory(self.store), self.user, self).exec()

    def apply_settings(self, new: StationSettings) -> None:
        self.user.require("settings")
        old = self.settings
        self._audit_settings(old, new)
        self.settings = new
        self._save_settings()
        self.setWindowTitle(f"Inspection station — {new.station_name}")
        if (new.model_path, new.data_dir) != (old.model_path, old.data_dir) or self.inspector is None:
            if new.model_path != old.model_path:
                self.detector = None
            self._load_model_and_store()
        else:
            self.inspector.rule = new.rule
            self.inspector.station = new.station_name
            self.inspector.keep_pictures = new.keep_pictures
            if self.store is not None:
                self.store.min_free_bytes = int(new.min_free_mb * 1e6)
        if new.source != old.source and new.source:
            self.open_source(new.source, remember=False)
        self.view.set_roi(new.roi)
        self._show_problems()

    def _audit_settings(self, old: StationSettings, new: StationSettings) -> None:
        """Rule, model and other settings changes go into the audit trail."""
        if self.store is None:
            return
        before, after = old.to_dict(), new.to_dict()
        records = []
        for key, action in (("rule", "settings.rule"), ("model_path", "settings.model")):
            if before.pop(key) != after[key]:
                records.append((action, old.to_dict()[key], after[key]))
            after.pop(key)
        changed = sorted(k for k in after if before.get(k) != after[k])
        if changed:
            records.append(("settings.change", {k: before[k] for k in changed}, {k: after[k] for k in changed}))
        for action, old_value, new_value in records:
            try:
                record_setting_change(self.store, self.user, action, old_value, new_value)
            except Exception as exc:  # noqa: BLE001  (an audit failure must be seen, not crash the station)
                self._problems.append(f"Settings change not audited: {exc}")

    # -- gallery and reports tabs -----------------------------------------------------

    def _on_tab(self, index: int) -> None:
        tab = self.tabs.widget(index)
        if self.store is None or tab not in (self._gallery_tab, self._reports_tab):
            return
        colours = dict(self.detector.metadata.colours) if self.detector else {}
        if tab is self._gallery_tab:
            if self.gallery is None:
                from app.ui.gallery import GalleryWidget

                self.gallery = GalleryWidget(self.store, self.user, colours)
                tab.layout().addWidget(self.gallery)
            else:
                self.gallery.refresh_choices()
                self.gallery.apply_filters()
        elif tab is self._reports_tab:
            if self.reports is None:
                from app.ui.trends import ReportsWidget

                self.reports = ReportsWidget(self.store.db_path, class_colours=colours, shifts=self.settings.shifts)
                tab.layout().addWidget(self.reports)

    # -- closing ------------------------------------------------------------------

    def closeEvent(self, event) -> None:  # noqa: N802
        self._timer.stop()
        if self.feed is not None:
            self.feed.stop(timeout=1.0)
        self.runner.wait(10.0)  # let a running inspection finish logging
        self._save_settings()
        if self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)
