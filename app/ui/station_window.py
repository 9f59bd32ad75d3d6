"""The operator screen: live picture, Inspect, overlay, PASS/FAIL, log.

Capture runs on the feed's thread and inference on a worker thread; the GUI
thread only polls the newest frame and paints, so the window never freezes
and a slow model drops frames instead of queueing them.

A verdict belongs to the one frame it was made on. Anything that changes what
the operator is looking at (another picture, a new live frame, another source,
region or serial) clears it to NOT INSPECTED at once, and a result that comes
back after such a change is logged but never shown as the current part's.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QApplication,
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
from app.overlay import FALLBACK_COLOUR, as_bgr
from app.paths import default_config_path
from app.review import record_setting_change
from app.roi import Roi
from app.settings import StationSettings, save_settings
from app.settings_audit import check_outside_changes, record_written
from app.sources import FAILED, NOT_FOUND, RECONNECTING, FrameSource, ImageFilesSource, LiveFeed, SourceError, open_source
from app.store import InspectionStore, StoreError
from app.users import SETUP_USER, User, UserDirectory
from detector import Detector

POLL_MS = 30  # GUI refresh of the live picture (~33 Hz)
IDLE_CHECK_MS = 1000
NO_CAMERA_HINT = (
    "No camera found.\n\nThe station is in file mode: open pictures, a folder or a video with "
    "File ▸ Open (Ctrl+O, Ctrl+Shift+O), or set a camera or stream in Settings (Ctrl+,)."
)
NOT_INSPECTED = "NOT INSPECTED"
VERDICT_STYLE = {
    "PASS": "background:#2e7d32; color:white;",
    "FAIL": "background:#c62828; color:white;",
    NOT_INSPECTED: "background:#424242; color:#e0e0e0;",
    "ERROR": "background:#6d4c41; color:white;",
}
# The defect list: dark text on white (15.9:1), failing rows dark red (7.1:1): WCAG AA needs 4.5:1.
LIST_TEXT, LIST_BACKGROUND, LIST_FAIL_TEXT = "#212121", "#ffffff", "#b71c1c"
INSPECT_LABEL = "Inspect  (F5 / Space)"


def model_description(detector: Detector) -> str:
    """The model file in use and its precision, e.g. 'centernet_neu_scratch_pit.int8.onnx (int8)'."""
    path = Path(detector.model_path)
    quantized = ".int8." in path.name or bool(getattr(getattr(detector, "_backend", None), "quantization", None))
    precision = "int8" if quantized else "fp32"
    return f"{path.name} ({precision})"


class InspectionRunner(QObject):
    """Runs one inspection at a time on a worker thread; results come back as signals.

    Each submission carries a context token that comes back with its result,
    so the window can tell whether the result still belongs to what is shown.
    """

    finished = Signal(object)  # (InspectionResult, context)
    failed = Signal(object)  # (message, context)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(self, inspector: Inspector, frame: np.ndarray, context: int, **kwargs) -> bool:
        """Start an inspection; False (and nothing queued) if one is still running."""
        if self._busy.is_set():
            return False
        self._busy.set()
        self._thread = threading.Thread(target=self._run, args=(inspector, frame, context, kwargs), daemon=True,
                                        name="inspection")
        self._thread.start()
        return True

    def wait(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, inspector: Inspector, frame: np.ndarray, context: int, kwargs: dict) -> None:
        try:
            result = inspector.inspect(frame, **kwargs)
        except ValueError as exc:  # bad frame or region: tell the operator, keep running
            self._busy.clear()
            self.failed.emit((str(exc), context))
            return
        except Exception as exc:  # never let a model failure take the station down
            self._busy.clear()
            self.failed.emit((f"inspection failed: {type(exc).__name__}: {exc}", context))
            return
        self._busy.clear()
        self.finished.emit((result, context))


class _InputWatcher(QObject):
    """Notes the time of the last key or mouse input anywhere in the application (for the idle lock)."""

    INPUT_EVENTS = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
                              QEvent.Type.Wheel, QEvent.Type.TouchBegin})

    def __init__(self, parent: QObject):
        super().__init__(parent)
        self.last_input = time.monotonic()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() in self.INPUT_EVENTS:
            self.last_input = time.monotonic()
        return False


class StationWindow(QMainWindow):
    def __init__(self, settings: StationSettings, config_path: Path | None = None, warnings: list[str] | None = None,
                 detector: Detector | None = None, user: User | None = SETUP_USER, overrides: dict | None = None,
                 db_path: Path | None = None):
        """`settings`: as read from the settings file (what is saved back);
        `overrides`: command-line values for this run only (source, model_path,
        data_dir), never written to the file; `db_path`: a log to open instead of
        the data folder's (`--db`); `user`: who signed in (None: locked)."""
        super().__init__()
        self._base_settings = settings
        self._overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self._db_override = Path(db_path) if db_path else None
        self.user: User | None = user
        self.gallery = None  # built when first shown
        self.reports = None
        self.config_path = config_path
        self.setWindowTitle(f"Inspection station — {self.settings.station_name}")
        self.detector: Detector | None = detector
        self.store: InspectionStore | None = None
        self.users: UserDirectory | None = None
        self.inspector: Inspector | None = None
        self.feed: LiveFeed | None = None
        self.last_result: InspectionResult | None = None
        self.current_result: InspectionResult | None = None  # the result on screen, None: not inspected
        self.inspections_done = 0
        self._context = 0  # bumped whenever what the operator looks at changes
        self._holding_result = False  # the view shows the last result, not the live picture
        self._shown_seq = -1
        self._submitted_seq = -1
        self._probing_camera = False
        self._problems: list[str] = list(warnings or [])
        self._click_time: float | None = None
        self._login = None
        self.last_click_to_verdict_ms: float | None = None
        self.display_threshold = DETECTION_FLOOR

        self.runner = InspectionRunner(self)
        self.runner.finished.connect(self._on_result)
        self.runner.failed.connect(self._on_inspection_failed)

        self._build_ui()
        self._load_model_and_store()
        self._check_settings_file()
        self._open_configured_source()
        self._apply_user(user)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self._poll)
        self._timer.start(POLL_MS)
        self._input = _InputWatcher(self)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self._input)
        self._idle_timer = QTimer(self)
        self._idle_timer.timeout.connect(self._check_idle)
        self._idle_timer.start(IDLE_CHECK_MS)
        self._show_problems()

    # -- settings: the file's, plus this run's command-line overrides -------------------

    @property
    def settings(self) -> StationSettings:
        return replace(self._base_settings, **self._overrides) if self._overrides else self._base_settings

    @property
    def db_path(self) -> Path:
        return self._db_override or self.settings.db_path

    # -- construction -------------------------------------------------------------

    def _build_ui(self) -> None:
        from app.ui.image_view import ImageView

        self.view = ImageView()
        self.view.roi_drawn.connect(self._on_roi_drawn)

        self.verdict_label = QLabel()
        self.verdict_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict_label.setMinimumHeight(110)
        self._set_verdict(None)

        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)

        self.part_edit = QLineEdit()
        self.part_edit.setPlaceholderText("type or scan, Enter inspects")
        self.part_edit.returnPressed.connect(self.inspect_now)
        self.part_edit.textEdited.connect(lambda _text: self._invalidate())
        self.operator_edit = QLineEdit(self.settings.operator)
        self.operator_edit.setPlaceholderText("operator name or badge")
        self.operator_edit.editingFinished.connect(self._on_operator_changed)
        self.signed_in_label = QLabel()

        self.inspect_button = QPushButton(INSPECT_LABEL)
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

        # The display filter: which boxes are drawn. Never the verdict (that is the admin's rule).
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(int(DETECTION_FLOOR * 100), 99)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(DETECTION_FLOOR, 0.99)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setKeyboardTracking(False)  # 0.45 typed is 0.45, not 0.4 on the way there
        self.threshold_slider.valueChanged.connect(lambda v: self._set_display_threshold(v / 100.0))
        self.threshold_spin.valueChanged.connect(self._set_display_threshold)
        self.rule_label = QLabel()
        self.rule_label.setWordWrap(True)

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
        self.detections_list.setStyleSheet(f"QListWidget {{ background:{LIST_BACKGROUND}; color:{LIST_TEXT}; }}")

        side = QWidget()
        col = QVBoxLayout(side)
        col.addWidget(self.verdict_label)
        col.addWidget(self.inspect_button)
        ids = QFormLayout()
        ids.addRow("Part / serial", self.part_edit)
        ids.addRow("Operator", self.operator_edit)
        ids.addRow("Signed in", self.signed_in_label)
        self._ids_form = ids
        col.addLayout(ids)
        thr = QGroupBox("Show boxes scoring at least (display only)")
        tl = QVBoxLayout(thr)
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        tl.addLayout(row)
        tl.addWidget(self.rule_label)
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
        col.addWidget(QLabel("Defects:"))
        col.addWidget(self.detections_list, 1)
        col.addWidget(self.legend)
        self._show_defect_list_placeholder()

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
        self.tabs.currentChanged.connect(self._on_tab)
        self.setCentralWidget(self.tabs)

        self.source_label = QLabel()
        self.fps_label = QLabel()
        self.ms_label = QLabel()
        self.log_label = QLabel()
        self.user_label = QLabel()
        for w in (self.source_label, self.fps_label, self.ms_label, self.log_label, self.user_label):
            self.statusBar().addPermanentWidget(w)

        self._build_menu()
        # F5 inspects wherever the focus is; Space too, except where it types (text fields).
        for key in ("F5", "Space"):
            QShortcut(QKeySequence(key), self).activated.connect(self.inspect_now)
        QShortcut(QKeySequence("Esc"), self).activated.connect(self._on_escape)
        QShortcut(QKeySequence("PgDown"), self).activated.connect(lambda: self._step(1))
        QShortcut(QKeySequence("PgUp"), self).activated.connect(lambda: self._step(-1))

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
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.triggered.connect(self.open_settings)
        m.addAction(self.settings_action)
        self.users_action = QAction("&Users and roles…", self)
        self.users_action.triggered.connect(self.open_users)
        m.addAction(self.users_action)
        m.addSeparator()
        self.switch_user_action = QAction("S&witch user / sign out", self)
        self.switch_user_action.setShortcut(QKeySequence("Ctrl+L"))
        self.switch_user_action.triggered.connect(lambda: self.lock("Signed out."))
        m.addAction(self.switch_user_action)
        m.addSeparator()
        a = QAction("&Quit", self)
        a.setShortcut(QKeySequence("Ctrl+Q"))
        a.triggered.connect(self.close)
        m.addAction(a)

    def _load_model_and_store(self) -> None:
        wanted = self.settings.model_path
        if self.detector is None or (wanted and Path(wanted) != self.detector.model_path):
            try:
                self.detector = Detector(wanted)
            except (ValueError, FileNotFoundError, OSError) as exc:
                self.detector = None
                self._problems.append(f"Model not loaded: {exc}\nFix the model path in Settings.")
        if self.store is not None:
            self.store.close()
            self.store = self.users = None
        try:
            self.store = InspectionStore(self.db_path, min_free_bytes=int(self.settings.min_free_mb * 1e6))
            self.users = UserDirectory(self.store, min_pin_length=self.settings.min_pin_length)
        except StoreError as exc:
            self._problems.append(f"Inspection log unavailable: {exc}\nInspections are NOT logged until this is fixed.")
        if self.detector is not None:
            self.inspector = Inspector(self.detector, self.store, self.settings.station_name, self.settings.rule,
                                       self.settings.keep_pictures)
            meta = self.detector.metadata
            swatches = " ".join(
                f"<span style='background:{meta.colours.get(c, FALLBACK_COLOUR)}; color:black; padding:2px 6px;'>"
                f"&nbsp;{c}&nbsp;</span>" for c in meta.class_names
            )
            self.legend.setText(f"{swatches}<br><small>solid box + FAIL: fails the part · dashed: shown only</small>"
                                f"<br><small>model {model_description(self.detector)} · {self.detector.model_id}</small>")
        else:
            self.inspector = None
            self.legend.setText("<b>no model loaded</b>")
        self._apply_display_widgets(self.decision_threshold)
        self._update_rule_label()
        self._update_inspect_enabled()

    def _show_problems(self) -> None:
        if self._problems:
            text = "\n\n".join(self._problems)
            self._problems = []
            self.statusBar().showMessage(text.splitlines()[0], 15000)
            box = QMessageBox(QMessageBox.Icon.Warning, "Inspection station", text, QMessageBox.StandardButton.Ok, self)
            box.setModal(False)
            box.show()
            self._problem_box = box  # kept so tests and screenshots can close it

    # -- users: who is signed in, and what they may do right now ---------------------

    def _station_open(self) -> bool:
        """No user was ever created: first-run set-up, everyone is the set-up admin."""
        return self.users is None or self.users.is_open()

    def _apply_user(self, user: User | None) -> None:
        """Show the station as `user` may use it (None: locked until someone signs in)."""
        self.user = user
        signed_in = user is not None and user is not SETUP_USER
        self.operator_edit.setVisible(not signed_in)
        self._ids_form.labelForField(self.operator_edit).setVisible(not signed_in)
        self.signed_in_label.setVisible(signed_in)
        self._ids_form.labelForField(self.signed_in_label).setVisible(signed_in)
        if signed_in:
            self.signed_in_label.setText(f"<b>{user.name}</b> ({user.role}) — logged with each inspection")
        self.user_label.setText("🔒 locked — sign in (Ctrl+L)" if user is None else
                                f"{user.name} ({user.role})" + ("  · open station: no users yet" if user is SETUP_USER else ""))
        for tab, permission, title in ((self._gallery_tab, "gallery", "Gallery (QA)"), (self._reports_tab, "reports", "Reports")):
            allowed = user is not None and user.can(permission)
            index = self.tabs.indexOf(tab)
            if allowed and index < 0:
                self.tabs.addTab(tab, title)
            elif not allowed and index >= 0:
                self.tabs.removeTab(index)
        # Views built for someone else are rebuilt for the new user when next shown.
        for attr, tab in (("gallery", self._gallery_tab), ("reports", self._reports_tab)):
            widget = getattr(self, attr)
            if widget is not None and getattr(widget, "user", user) != user:
                tab.layout().removeWidget(widget)
                widget.deleteLater()
                setattr(self, attr, None)
        self.settings_action.setEnabled(user is not None and user.can("settings"))
        self.users_action.setEnabled(user is not None and user.can("users"))
        self.switch_user_action.setEnabled(not self._station_open())
        self.continuous_check.setEnabled(user is not None)
        self._update_inspect_enabled()
        if user is None:
            self.view.set_banner("Locked — sign in to inspect (Ctrl+L)")
        elif self.view.banner().startswith("Locked"):
            self.view.set_banner("")

    def _update_inspect_enabled(self) -> None:
        self.inspect_button.setEnabled(self.inspector is not None and self.user is not None)

    def lock(self, reason: str = "") -> None:
        """Sign the current user out (shift change, idle, account disabled) and ask who is next."""
        if self._station_open():
            return
        if self.continuous_check.isChecked():
            self.continuous_check.setChecked(False)
        self._invalidate()
        self._apply_user(None)
        if reason:
            self.statusBar().showMessage(reason, 15000)
        self.ask_sign_in(reason)

    def ask_sign_in(self, reason: str = "") -> None:
        """Show the sign-in dialog (not blocking: the live picture keeps running behind it)."""
        from app.ui.login import LoginDialog

        if self.users is None:
            return
        if self._login is not None:
            self._login.raise_()
            return
        self._login = LoginDialog(self.users, self, message=reason)
        self._login.finished.connect(self._on_login_finished)
        self._login.open()

    def _on_login_finished(self, _code: int) -> None:
        dialog, self._login = self._login, None
        if dialog is not None and dialog.user is not None:
            self._apply_user(dialog.user)
            self.statusBar().showMessage(f"Signed in: {dialog.user.name} ({dialog.user.role})", 5000)

    def _fresh_user(self) -> User | None:
        """The signed-in user as the database has them now (role changes and disabling count at once)."""
        if self.user is None:
            return None
        if self._station_open():
            return SETUP_USER if self.user is SETUP_USER else self.user
        if self.user is SETUP_USER:  # users were created while the station was open: someone must sign in
            self.lock("Users exist now: sign in.")
            return None
        fresh = self.users.current(self.user.name)
        if fresh is None:
            self.lock(f"{self.user.name} is no longer an active user: signed out.")
            return None
        if fresh.role != self.user.role:
            self._apply_user(fresh)
        return fresh

    def _allowed(self, permission: str, what: str) -> bool:
        user = self._fresh_user()
        if user is None:
            return False
        if not user.can(permission):
            self.statusBar().showMessage(f"{user.name} ({user.role}) may not {what}.", 10000)
            return False
        return True

    def _check_idle(self) -> None:
        minutes = self.settings.idle_lock_minutes
        if not minutes or self.user is None or self._station_open():
            return
        if time.monotonic() - self._input.last_input >= minutes * 60.0:
            self.lock(f"Locked after {minutes:g} min without input.")

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
            source: FrameSource = open_source(spec, loop_video=True, max_megapixels=self.settings.max_megapixels,
                                              bit_depth=self.settings.bit_depth)
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
        self._invalidate()
        self._shown_seq = self._submitted_seq = -1
        self.view.set_image(None)
        self.view.set_message("Connecting to " + source.name + "…")
        self.view.set_banner("")
        is_pictures = isinstance(source, ImageFilesSource)
        self.prev_button.setEnabled(is_pictures)
        self.next_button.setEnabled(is_pictures)

    def _pictures(self) -> ImageFilesSource | None:
        source = self.feed.source if self.feed is not None else None
        return source if isinstance(source, ImageFilesSource) else None

    def _step(self, delta: int) -> None:
        """Next/previous picture of a folder; stops at either end instead of wrapping."""
        pictures = self._pictures()
        if pictures is None or not pictures.files:
            return
        target = pictures.index + delta
        if not 0 <= target < len(pictures.files):
            end = "last" if delta > 0 else "first"
            self.statusBar().showMessage(f"This is the {end} picture of the folder ({pictures.index + 1}/{len(pictures.files)}).",
                                         5000)
            return
        self._invalidate()
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
        if state in (RECONNECTING, NOT_FOUND) and self._probing_camera:
            self._probing_camera = False
            feed.stop(timeout=0.2)
            self.feed = None
            self.view.set_image(None)
            self.view.set_message(NO_CAMERA_HINT)
            self.source_label.setText("file mode")
            return
        pictures = self._pictures()
        if state == RECONNECTING:
            what = "Camera disconnected — reconnecting" if feed.source.live else "Source unavailable — retrying"
            self.view.set_banner(f"{what}…  ({feed.error})")
            self.source_label.setText("⚠ reconnecting")
        elif state == NOT_FOUND:  # never opened: not a lost camera, a wrong one (or not plugged in yet)
            self.view.set_banner(f"{feed.error[:1].upper()}{feed.error[1:]} — retrying every {self.settings.reconnect_seconds:g} s")
            self.view.set_message("")
            self.source_label.setText(f"⚠ {feed.error}")
        elif state == FAILED:  # e.g. a corrupt picture file: said once, nothing to retry
            self.view.set_banner(f"Cannot show {feed.source.name}: {feed.error}")
            self.view.set_message("")
            self.source_label.setText("⚠ no picture")
        else:
            if self.view.banner() and self.user is not None:
                self.view.set_banner("")
            self._probing_camera = self._probing_camera and state != "live"
            if pictures is not None and pictures.current_file is not None:
                skipped = feed.skipped_files
                self.source_label.setText(
                    f"picture {pictures.index + 1}/{len(pictures.files)}: {pictures.current_file.name}"
                    + (f"  ·  ⚠ {len(skipped)} unreadable: {'; '.join(skipped[:3])}{' …' if len(skipped) > 3 else ''}"
                       if skipped else ""))
            else:
                self.source_label.setText(f"{feed.source.name} ({state})")
        fps = feed.fps() if pictures is None else 0.0  # a folder has no frame rate
        self.fps_label.setText(f"camera {fps:.1f} fps" if fps else "")
        latest = feed.latest()
        if latest is None:
            return
        if not self._holding_result and latest.seq != self._shown_seq:
            self._shown_seq = latest.seq
            self.view.set_message("")
            self.view.set_image(as_bgr(latest.frame), (latest.frame.shape[1], latest.frame.shape[0]))
            self.view.set_roi(self.settings.roi)
            if latest.warnings:
                self.statusBar().showMessage("⚠ " + "; ".join(latest.warnings), 15000)
        if self.continuous_check.isChecked() and not self.runner.busy and latest.seq != self._submitted_seq:
            if latest.wrapped:  # round the end of the folder: every picture has had its turn
                self.continuous_check.setChecked(False)
                self.statusBar().showMessage("Continuous mode stopped: the folder went round to its first picture.", 15000)
                return
            self._submit(latest.frame, latest.seq, latest.label, latest.warnings)

    # -- inspecting ---------------------------------------------------------------

    def inspect_now(self) -> None:
        """Inspect the newest frame (button, F5, Space outside text fields, Enter in the part field)."""
        if self.inspector is None:
            self.statusBar().showMessage("No model is loaded: set a model file in Settings (Ctrl+,).", 10000)
            return
        if self.user is None:
            self.statusBar().showMessage("Locked: sign in first (Ctrl+L).", 8000)
            self.ask_sign_in()
            return
        if not self._allowed("inspect", "inspect"):
            return
        latest = self.feed.latest() if self.feed is not None else None
        if latest is None:
            self.statusBar().showMessage("No picture to inspect yet: open a camera, video or pictures (File menu).", 8000)
            return
        self._click_time = time.perf_counter()
        if not self._submit(latest.frame, latest.seq, latest.label, latest.warnings):
            self.statusBar().showMessage("Still inspecting the previous frame…", 2000)

    def _operator(self) -> str:
        """Who is logged with an inspection: the signed-in user; the free field only on an open station."""
        if self.user is None:
            return ""
        if self.user is SETUP_USER:
            return self.operator_edit.text().strip()
        return self.user.name

    def _submit(self, frame: np.ndarray, seq: int, label: str, warnings: tuple[str, ...] = ()) -> bool:
        if self.inspector is None or self.user is None:
            return False
        ok = self.runner.submit(
            self.inspector, frame, self._context, roi=self.settings.roi, threshold=self.decision_threshold,
            source=label, operator=self._operator(), part_id=self.part_edit.text().strip(),
            frame_warnings=warnings or None,
        )
        if ok:
            self._submitted_seq = seq
            self.inspect_button.setText("Inspecting…")
        return ok

    def _on_result(self, payload) -> None:
        result, context = payload
        self.last_result = result
        self.inspections_done += 1
        self.inspect_button.setText(INSPECT_LABEL)
        if self._click_time is not None:
            self.last_click_to_verdict_ms = (time.perf_counter() - self._click_time) * 1000.0
            self._click_time = None
        self.ms_label.setText(f"inference {result.inference_ms:.0f} ms")
        logged = f"#{result.inspection_id}" if result.inspection_id else "not logged"
        if context != self._context:
            # The operator moved on while the model ran: this verdict is not the part on screen.
            self.statusBar().showMessage(f"The previous part's inspection ({result.verdict.verdict}, {logged}) finished after "
                                         "you moved on; the part on screen is NOT INSPECTED.", 15000)
            return
        self.current_result = result
        self._holding_result = True
        self._render_result()
        if result.error:
            self.log_label.setText("⚠ NOT LOGGED")
            self.statusBar().showMessage(f"Inspection NOT logged: {result.error}", 20000)
        else:
            self.log_label.setText(f"logged {logged}")
            if result.warnings:
                self.statusBar().showMessage("; ".join(result.warnings), 15000)
        if self.continuous_check.isChecked():
            self._continue_through_folder()
        else:
            self.part_edit.selectAll()  # the next scan replaces the serial

    def _continue_through_folder(self) -> None:
        """Continuous mode on a picture folder: on to the next picture, stop after the last."""
        pictures = self._pictures()
        if pictures is None:
            return
        if pictures.index + 1 < len(pictures.files):
            self.feed.step(1)
        else:
            self.continuous_check.setChecked(False)
            self.statusBar().showMessage(f"Continuous mode stopped: that was the last picture of the folder "
                                         f"({len(pictures.files)}).", 15000)

    def _on_inspection_failed(self, payload) -> None:
        message, context = payload
        self._click_time = None
        self.inspect_button.setText(INSPECT_LABEL)
        self.statusBar().showMessage(message, 15000)
        if context == self._context:
            self.current_result = None
            self._set_verdict("ERROR")
            self.detections_list.clear()
            self.detections_list.addItem(f"not inspected: {message}")
        if self.continuous_check.isChecked():
            self.continuous_check.setChecked(False)  # the same frame would fail again

    def _invalidate(self) -> None:
        """What the operator looks at changed: no verdict is on screen until the next inspection."""
        self._context += 1
        self.current_result = None
        self._holding_result = False
        self._shown_seq = -1  # redraw the live picture (without the old overlay) at the next poll
        self._set_verdict(None)
        self._show_defect_list_placeholder()

    def _show_defect_list_placeholder(self) -> None:
        self.detections_list.clear()
        self.detections_list.addItem("not inspected — press Inspect (F5)")

    def _render_result(self) -> None:
        r = self.current_result
        if r is None or self.inspector is None:
            return
        shown = r.displayed(self.display_threshold)
        overlay = self.inspector.annotate(r, shown, badge=False)  # the big label shows the verdict
        self.view.set_image(overlay, (r.frame.shape[1], r.frame.shape[0]), show_roi=False)
        self._set_verdict(r.verdict.verdict)
        self.detections_list.clear()
        failing = set(r.verdict.failing)
        for i in sorted(shown, key=lambda k: (k not in failing, -r.detections[k].score)):
            d = r.detections[i]
            x1, y1, x2, y2 = d.box
            item = QListWidgetItem(("✖ FAIL  " if i in failing else "")
                                   + f"{d.label}  {d.score:.2f}   {x2 - x1:.0f}×{y2 - y1:.0f} px at ({x1:.0f}, {y1:.0f})")
            item.setForeground(QColor(LIST_FAIL_TEXT if i in failing else LIST_TEXT))
            item.setIcon(self._swatch(d.label))
            if i in failing:
                f = item.font()
                f.setBold(True)
                item.setFont(f)
            self.detections_list.addItem(item)
        if not shown:
            self.detections_list.addItem("no defects shown at this display filter")
        for warning in r.warnings:  # e.g. a nearly black frame: the verdict may not mean much
            item = QListWidgetItem(f"⚠ {warning}")
            item.setForeground(QColor(LIST_FAIL_TEXT))
            self.detections_list.addItem(item)

    def _swatch(self, label: str) -> QIcon:
        pm = QPixmap(14, 14)
        pm.fill(QColor(self.inspector.colours.get(label, FALLBACK_COLOUR) if self.inspector else FALLBACK_COLOUR))
        return QIcon(pm)

    def shown_detections(self):
        """Detections currently drawn (for tests and the screenshot tool)."""
        r = self.current_result
        if r is None:
            return []
        return [r.detections[i] for i in r.displayed(self.display_threshold)]

    def _set_verdict(self, verdict: str | None) -> None:
        text = verdict or NOT_INSPECTED
        self.verdict_label.setText(text)
        f = self.verdict_label.font()
        f.setPointSize(40 if verdict in ("PASS", "FAIL") else 20)
        f.setBold(True)
        self.verdict_label.setFont(f)
        self.verdict_label.setStyleSheet(VERDICT_STYLE.get(text, VERDICT_STYLE[NOT_INSPECTED]) + " border-radius:8px;")

    def back_to_live(self) -> None:
        self._invalidate()

    def _on_escape(self) -> None:
        if self.view.is_drawing():
            self.view.cancel_drawing()
        else:
            self.back_to_live()

    def _on_continuous_toggled(self, on: bool) -> None:
        self._update_settings(continuous=on)
        pictures, latest = self._pictures(), self.feed.latest() if self.feed is not None else None
        if on and pictures is not None and latest is not None and latest.seq == self._submitted_seq:
            # The picture on screen was inspected already: continuous mode goes on with the next one.
            if pictures.index + 1 < len(pictures.files):
                self._invalidate()
                self.feed.step(1)
            else:
                self.continuous_check.setChecked(False)
                self.statusBar().showMessage("Continuous mode: this is the last picture of the folder and it is "
                                             "inspected already.", 10000)

    # -- thresholds: the rule's (admin) and the display filter (anyone) -------------------

    @property
    def decision_threshold(self) -> float:
        """The rule's threshold: detections at or above it are judged (settings, else the model's default)."""
        if self.settings.threshold is not None:
            return self.settings.threshold
        return self.detector.metadata.default_threshold if self.detector is not None else 0.3

    @property
    def threshold(self) -> float:
        """The display filter's value (what the slider shows)."""
        return self.display_threshold

    def _apply_display_widgets(self, value: float) -> None:
        value = round(min(0.99, max(DETECTION_FLOOR, value)), 2)
        self.display_threshold = value
        for w in (self.threshold_slider, self.threshold_spin):
            w.blockSignals(True)
        self.threshold_slider.setValue(int(round(value * 100)))
        self.threshold_spin.setValue(value)
        for w in (self.threshold_slider, self.threshold_spin):
            w.blockSignals(False)

    def _set_display_threshold(self, value: float) -> None:
        """Slider or box moved: redraw the boxes of the result on screen; the verdict stays."""
        self._apply_display_widgets(value)
        if self.current_result is not None:
            self._render_result()

    def _update_rule_label(self) -> None:
        self.rule_label.setText(f"Verdict rule (set by an admin): FAIL at score ≥ <b>{self.decision_threshold:.2f}</b> "
                                f"within the class limits. The slider only shows or hides boxes.")

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
        self._invalidate()
        self.view.set_roi(roi)
        self._update_settings(roi=roi)
        self.statusBar().showMessage(f"Inspection region: {roi}" if roi else "Inspection region: whole frame", 5000)

    # -- settings -----------------------------------------------------------------

    def _on_operator_changed(self) -> None:
        if self.operator_edit.isVisible():
            self._update_settings(operator=self.operator_edit.text().strip())

    def _update_settings(self, **changes) -> None:
        """Change settings and save them; a changed field no longer follows its command-line override."""
        self._base_settings = replace(self._base_settings, **changes)
        for key in changes:
            self._overrides.pop(key, None)
        self._save_settings()

    def _save_settings(self) -> None:
        try:
            path = save_settings(self._base_settings, self.config_path)
        except OSError as exc:
            self.statusBar().showMessage(f"Settings not saved: {exc}", 10000)
            return
        if self.store is not None:
            try:
                record_written(self.store, path, self.user.name if self.user else "station")
            except (StoreError, sqlite3.Error) as exc:
                self.statusBar().showMessage(f"Settings saved but not recorded in the audit trail: {exc}", 10000)

    def _check_settings_file(self) -> None:
        """A settings file changed by hand since the station last wrote it is reported and audited."""
        if self.store is None:
            return
        path = self.config_path or default_config_path()
        try:
            lines = check_outside_changes(self.store, path)
        except (StoreError, sqlite3.Error) as exc:
            self._problems.append(f"Could not check the settings file against the audit trail: {exc}")
            return
        if lines:
            self._problems.append(f"The settings file {path} was changed outside the station since it last saved it "
                                  "(recorded in the audit trail):\n  " + "\n  ".join(lines))

    def open_settings(self) -> None:
        if not self._allowed("settings", "change settings"):
            return
        from app.ui.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.settings, self.detector.metadata.class_names if self.detector else (), self,
                             model_threshold=self.detector.metadata.default_threshold if self.detector else None)
        if dlg.exec() != SettingsDialog.DialogCode.Accepted:
            return
        self.apply_settings(dlg.result_settings())

    def open_users(self) -> None:
        if self.store is None or self.users is None:
            self.statusBar().showMessage("The inspection log is unavailable, and users live in it.", 10000)
            return
        if not self._allowed("users", "manage users"):
            return
        from app.ui.users_dialog import UsersDialog

        UsersDialog(self.users, self.user, self).exec()
        if self.user is SETUP_USER and not self._station_open():
            self.lock("The station has users now: sign in.")
        else:
            self._fresh_user()  # the admin may have changed their own role

    def apply_settings(self, new: StationSettings) -> None:
        if not self._allowed("settings", "change settings"):
            return
        old = self.settings
        self._audit_settings(old, new)
        # Fields left at their command-line value keep the file's value; changed ones are saved.
        keep = {k: getattr(self._base_settings, k) for k, v in self._overrides.items() if getattr(new, k) == v}
        self._overrides = {k: v for k, v in self._overrides.items() if k in keep}
        self._base_settings = replace(new, **keep)
        self._save_settings()
        new = self.settings
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
        if (new.rule, new.threshold) != (old.rule, old.threshold):
            self._invalidate()  # a verdict on screen was made under the old rule
            self._update_rule_label()
        if new.source != old.source and new.source:
            self.open_source(new.source, remember=False)
        self.view.set_roi(new.roi)
        self._show_problems()

    def _audit_settings(self, old: StationSettings, new: StationSettings) -> None:
        """Rule (with its threshold), model and other settings changes go into the audit trail."""
        if self.store is None:
            return
        before, after = old.to_dict(), new.to_dict()
        records = []
        rule_before = {"rule": before.pop("rule"), "threshold": before.pop("threshold")}
        rule_after = {"rule": after.pop("rule"), "threshold": after.pop("threshold")}
        if rule_before != rule_after:
            records.append(("settings.rule", rule_before, rule_after))
        if before.pop("model_path") != after["model_path"]:
            records.append(("settings.model", old.model_path, new.model_path))
        after.pop("model_path")
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
        permission = "gallery" if tab is self._gallery_tab else "reports"
        if not self._allowed(permission, "open this tab"):
            self.tabs.setCurrentIndex(0)
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
                self.reports.user = self.user
                tab.layout().addWidget(self.reports)

    # -- closing ------------------------------------------------------------------

    def closeEvent(self, event) -> None:  # noqa: N802
        self._timer.stop()
        self._idle_timer.stop()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._input)
        if self._login is not None:
            self._login.finished.disconnect(self._on_login_finished)
            self._login.reject()
            self._login = None
        if self.feed is not None:
            self.feed.stop(timeout=2.0)
        self.runner.wait(10.0)  # let a running inspection finish logging
        self._save_settings()
        if self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)
