"""The operator screen: a view of the `Station` (app/station.py).

The station decides when an inspection runs and in what state it is; the
window renders its events (frames, results, state, recipe) and forwards the
user's intents (inspect, continuous, step, open a source, sign in, settings,
recipes). Station events arrive on station threads and are queued to the Qt
thread, so the window never freezes and a slow model drops frames instead of
queueing them.

A verdict belongs to the one frame it was made on. Anything that changes what
the operator is looking at (another picture, a new live frame, another source,
region or serial) clears it to NOT INSPECTED at once, and an operator's result
that comes back after such a change is logged but never shown as the current
part's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
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
from app.recipes import Recipe
from app.settings import StationSettings
from app.sources import FAILED, NOT_FOUND, RECONNECTING, FeedFrame, FrameSource, ImageFilesSource
from app.station import (
    ContinuousChanged,
    FrameArrived,
    InspectionDone,
    InspectionFailed,
    InspectionStarted,
    Job,
    RecipeChanged,
    SourceChanged,
    SourceEnded,
    StateChanged,
    Station,
    StationError,
)
from app.users import SETUP_USER, PermissionDenied, User
from detector import Detector
from detector.images import PICTURE_SUFFIXES
from detector.regions import Roi

POLL_MS = 30  # GUI refresh of the live picture (~33 Hz)
IDLE_CHECK_MS = 1000
OUTPUTS_REFRESH_S = 0.5
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


class _EventBridge(QObject):
    """Carries station events from the station's threads to the Qt thread (a queued signal)."""

    event = Signal(object)


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
                 db_path: Path | None = None, station: Station | None = None):
        """`settings`: as read from the settings file (what is saved back); `overrides`: command-line
        values for this run only (source, model_path, data_dir), never written to the file; `db_path`:
        a log to open instead of the data folder's (`--db`); `user`: who signed in (None: locked);
        `station`: a station to show (default: one built from these arguments, started here)."""
        super().__init__()
        self.station = station or Station(settings, config_path=config_path, overrides=overrides, db_path=db_path,
                                          detector=detector)
        self.user: User | None = user
        self.gallery = None  # built when first shown
        self.reports = None
        self.last_result: InspectionResult | None = None
        self.current_result: InspectionResult | None = None  # the result on screen, None: not inspected
        self.inspections_done = 0
        self._context = 0  # bumped whenever what the operator looks at changes
        self._trigger_context: int | None = None  # the context when the operator's inspection was triggered
        self._holding_result = False  # the view shows a result, not the live picture
        self._shown: FeedFrame | None = None  # the live frame on screen
        self._probing_camera = False
        self._problems: list[str] = list(warnings or [])
        self._outputs_shown_at = 0.0
        self._click_time: float | None = None
        self._login = None
        self.last_click_to_verdict_ms: float | None = None
        self.display_threshold = DETECTION_FLOOR

        self._bridge = _EventBridge(self)
        self._bridge.event.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = self.station.subscribe(self._bridge.event.emit)
        self._build_ui()
        if station is None:
            self.station.start(open_configured_source=False)
        self._problems += self.station.problems
        self.station.problems.clear()
        self.setWindowTitle(f"Inspection station — {self.settings.station_name}")
        self._show_model_and_recipe()
        self._open_configured_source()
        self.line = None
        self._start_line()
        self._apply_user(user)
        if self.settings.continuous:
            self.continuous_check.setChecked(True)

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

    # -- what the station holds --------------------------------------------------------

    @property
    def settings(self) -> StationSettings:
        return self.station.settings

    @property
    def store(self):
        return self.station.store

    @property
    def users(self):
        return self.station.users

    @property
    def feed(self):
        return self.station.feed

    @property
    def detector(self) -> Detector | None:
        return self.station.detector

    @property
    def recipe(self) -> Recipe | None:
        return self.station.recipe

    @property
    def config_path(self) -> Path:
        return self.station.config_path

    @property
    def inspector(self) -> Inspector | None:
        """An Inspector for drawing results with the active model's colours (None without a model)."""
        detector = self.detector
        return Inspector(detector, None, self.settings.station_name) if detector is not None else None

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

        self.recipe_combo = QComboBox()
        self.recipe_combo.setToolTip("The product type being inspected: its regions, model and rule")
        self.recipe_combo.activated.connect(self._on_recipe_chosen)
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
        self.roi_button.setToolTip("Drag a rectangle on the picture: the recipe's region (admins; saves a new recipe version)")
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
        ids.addRow("Recipe", self.recipe_combo)
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

        self.state_label = QLabel()
        self.source_label = QLabel()
        self.fps_label = QLabel()
        self.ms_label = QLabel()
        self.log_label = QLabel()
        self.outputs_label = QLabel()
        self.user_label = QLabel()
        for w in (self.state_label, self.source_label, self.fps_label, self.ms_label, self.log_label, self.outputs_label,
                  self.user_label):
            self.statusBar().addPermanentWidget(w)

        self._build_menu()
        # F5 inspects wherever the focus is; Space too, except where it types (text fields).
        for key in ("F5", "Space"):
            QShortcut(QKeySequence(key), self).activated.connect(self.inspect_now)
        QShortcut(QKeySequence("Esc"), self).activated.connect(self._on_escape)
        QShortcut(QKeySequence("PgDown"), self).activated.connect(lambda: self._step(1))
        QShortcut(QKeySequence("PgUp"), self).activated.connect(lambda: self._step(-1))

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
        self.recipes_action = QAction("&Recipes…", self)
        self.recipes_action.setShortcut(QKeySequence("Ctrl+R"))
        self.recipes_action.triggered.connect(self.open_recipes)
        m.addAction(self.recipes_action)
        self.users_action = QAction("&Users and roles…", self)
        self.users_action.triggered.connect(self.open_users)
        m.addAction(self.users_action)
        self.opcua_clients_action = QAction("&OPC UA client certificates…", self)
        self.opcua_clients_action.triggered.connect(self.open_opcua_clients)
        m.addAction(self.opcua_clients_action)
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

    def _show_model_and_recipe(self) -> None:
        """Legend, rule, recipe list and regions for the active recipe and its model."""
        detector, recipe = self.detector, self.recipe
        if detector is not None:
            meta = detector.metadata
            swatches = " ".join(
                f"<span style='background:{meta.colours.get(c, FALLBACK_COLOUR)}; color:black; padding:2px 6px;'>"
                f"&nbsp;{c}&nbsp;</span>" for c in meta.class_names
            )
            self.legend.setText(f"{swatches}<br><small>solid box + FAIL: fails the part · dashed: shown only</small>"
                                f"<br><small>model {model_description(detector)} · {detector.model_id}</small>")
        else:
            self.legend.setText(f"<b>no model loaded</b><br><small>{self.station.model_error}</small>")
        self.recipe_combo.blockSignals(True)
        self.recipe_combo.clear()
        recipes = self.station.recipes.list() if self.station.recipes is not None else ([recipe] if recipe else [])
        for r in recipes:
            self.recipe_combo.addItem(f"{r.name}  (v{r.version})" + (f"  [{r.external_id}]" if r.external_id else ""), r.name)
        if recipe is not None:
            self.recipe_combo.setCurrentIndex(max(0, self.recipe_combo.findData(recipe.name)))
        self.recipe_combo.blockSignals(False)
        self._apply_display_widgets(self.decision_threshold)
        self._update_rule_label()
        self._show_regions()
        self._update_inspect_enabled()

    def _show_regions(self) -> None:
        recipe = self.recipe
        if recipe is None:
            self.view.set_regions([])
            return
        several = len(recipe.regions) > 1
        self.view.set_regions([(r.roi, r.name if several else "") for r in recipe.regions if r.roi is not None])

    def _show_problems(self) -> None:
        if self._problems:
            text = "\n\n".join(self._problems)
            self._problems = []
            self.statusBar().showMessage(text.splitlines()[0], 15000)
            box = QMessageBox(QMessageBox.Icon.Warning, "Inspection station", text, QMessageBox.StandardButton.Ok, self)
            box.setModal(False)
            box.show()
            self._problem_box = box  # kept so tests and screenshots can close it

    def _start_line(self) -> None:
        """The line devices the settings ask for (Modbus TCP, OPC UA); a problem is shown, the window runs on."""
        from app.line import LineDevices

        if self.line is not None:
            self.line.stop()
        s = self.settings
        self.line = LineDevices(self.station, s.modbus, s.modbus_unit_id, s.opcua, s.opcua_allow_anonymous)
        try:
            self.line.start()
        except (ValueError, OSError) as exc:
            self._problems.append(f"Line connection not started: {exc}")
        self._problems += self.line.warnings

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
        admin = user is not None and user.can("settings")
        self.settings_action.setEnabled(admin)
        self.recipes_action.setEnabled(admin)
        self.opcua_clients_action.setEnabled(admin)
        self.roi_button.setEnabled(admin)
        self.roi_clear_button.setEnabled(admin)
        self.recipe_combo.setEnabled(user is not None and (admin or self.settings.operator_may_select_recipe))
        self.users_action.setEnabled(user is not None and user.can("users"))
        self.switch_user_action.setEnabled(not self._station_open())
        self.continuous_check.setEnabled(user is not None)
        self._update_inspect_enabled()
        if user is None:
            self.view.set_banner("Locked — sign in to inspect (Ctrl+L)")
        elif self.view.banner().startswith("Locked"):
            self.view.set_banner("")

    def _update_inspect_enabled(self) -> None:
        self.inspect_button.setEnabled(self.detector is not None and self.user is not None)

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
            return self.user
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
            self.station.open_source(spec, remember=remember)
            self._invalidate()  # at once: the verdict on screen was of the old source's part
        except StationError as exc:
            self._probing_camera = False
            self.statusBar().showMessage(str(exc)[:1].upper() + str(exc)[1:], 10000)
            return False
        if remember:
            self._probing_camera = False
        return True

    def use_source(self, source: FrameSource) -> None:
        """Show frames from `source` from now on (the previous feed stops)."""
        self.station.open_source(source)
        self._invalidate()

    def _pictures(self) -> ImageFilesSource | None:
        source = self.feed.source if self.feed is not None else None
        return source if isinstance(source, ImageFilesSource) else None

    def _step(self, delta: int) -> None:
        """Next/previous picture of a folder; stops at either end instead of wrapping."""
        pictures = self._pictures()
        if pictures is None or not pictures.files:
            return
        if not self.station.step(delta):
            end = "last" if delta > 0 else "first"
            self.statusBar().showMessage(f"This is the {end} picture of the folder ({pictures.index + 1}/{len(pictures.files)}).",
                                         5000)
            return
        self._invalidate()

    def _choose_pictures(self) -> None:
        pattern = " ".join(f"*{suffix}" for suffix in PICTURE_SUFFIXES)
        files, _ = QFileDialog.getOpenFileNames(self, "Open pictures", "", f"Pictures ({pattern})")
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

    # -- station events ------------------------------------------------------------------

    def _on_event(self, event) -> None:
        if isinstance(event, FrameArrived):
            self._on_frame(event.frame)
        elif isinstance(event, InspectionStarted):
            self.inspect_button.setText("Inspecting…")
        elif isinstance(event, InspectionDone):
            self._on_result(event)
        elif isinstance(event, InspectionFailed):
            self._on_inspection_failed(event)
        elif isinstance(event, ContinuousChanged):
            self.continuous_check.blockSignals(True)
            self.continuous_check.setChecked(event.on)
            self.continuous_check.blockSignals(False)
            if not event.on and event.reason:
                self.statusBar().showMessage(f"Continuous mode stopped: {event.reason}.", 15000)
        elif isinstance(event, SourceEnded):
            self.statusBar().showMessage(f"Continuous mode stopped: {event.reason}.", 15000)
        elif isinstance(event, SourceChanged):
            self._invalidate()
            self._shown = None
            self.view.set_image(None)
            self.view.set_message("Connecting to " + event.source.name + "…")
            self.view.set_banner("")
            is_pictures = isinstance(event.source, ImageFilesSource)
            self.prev_button.setEnabled(is_pictures)
            self.next_button.setEnabled(is_pictures)
        elif isinstance(event, RecipeChanged):
            shown = self.current_result
            if shown is not None and (shown.recipe.name, shown.recipe.version) != (event.recipe.name, event.recipe.version):
                self._invalidate()  # the verdict on screen was made under another recipe (version)
            self._show_model_and_recipe()
            self.statusBar().showMessage(f"Recipe {event.recipe.name} v{event.recipe.version} active"
                                         + (f" (by {event.by})" if event.by else ""), 8000)
        elif isinstance(event, StateChanged):
            self.state_label.setText(f"● {event.state.value}" + (f": {event.detail}" if event.detail else ""))

    def _on_frame(self, frame: FeedFrame) -> None:
        if self._holding_result or self.feed is None:
            return
        self._shown = frame
        self.view.set_message("")
        self.view.set_image(as_bgr(frame.frame), (frame.frame.shape[1], frame.frame.shape[0]))
        self._show_regions()
        if frame.warnings:
            self.statusBar().showMessage("⚠ " + "; ".join(frame.warnings), 15000)

    # -- polling: camera state and status bar ------------------------------------------

    def _poll(self) -> None:
        feed = self.feed
        if feed is None:
            return
        state = feed.state
        if state in (RECONNECTING, NOT_FOUND) and self._probing_camera:
            self._probing_camera = False
            self.station.close_source()
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
        health = getattr(feed.source, "health", None)
        if health is not None:  # an industrial camera: frames, incomplete/lost ones, resent packets
            from app.sources_genicam import health_text

            self.fps_label.setText((f"{fps:.1f} fps · " if fps else "") + health_text(health()))
        else:
            self.fps_label.setText(f"camera {fps:.1f} fps" if fps else "")
        now = time.monotonic()
        if now >= self._outputs_shown_at + OUTPUTS_REFRESH_S:  # backlog queries: a few times a second is plenty
            self._outputs_shown_at = now
            outputs = self.station.output_status()
            warnings = self.station.warnings()
            self.outputs_label.setText(" ".join(
                f"⇢ {o.name}: {o.backlog_rows} waiting" + (f", oldest {o.oldest_age_s:.0f} s" if o.oldest_age_s else "")
                if o.backlog_rows else f"⇢ {o.name}: delivered" for o in outputs) + "".join(f"  ⚠ {w}" for w in warnings))
            self.outputs_label.setStyleSheet("color:#b71c1c; font-weight:bold;" if warnings else "")

    # -- inspecting ---------------------------------------------------------------

    def inspect_now(self) -> None:
        """Inspect the frame on screen (button, F5, Space outside text fields, Enter in the part field)."""
        if self.detector is None:
            self.statusBar().showMessage("No model is loaded: set the recipe's model file (File ▸ Recipes).", 10000)
            return
        if self.user is None:
            self.statusBar().showMessage("Locked: sign in first (Ctrl+L).", 8000)
            self.ask_sign_in()
            return
        if not self._allowed("inspect", "inspect"):
            return
        triggered = self.feed is not None and getattr(self.feed.source, "software_trigger", False)
        frame = None
        if not triggered:  # the frame on screen; a camera in software-trigger mode takes a new one for the part
            frame = self._shown if not self._holding_result else None
            frame = frame or (self.feed.latest() if self.feed is not None else None)
            if frame is None:
                self.statusBar().showMessage("No picture to inspect yet: open a camera, video or pictures (File menu).", 8000)
                return
        self._click_time = time.perf_counter()
        job = Job("operator", part_id=self.part_edit.text().strip(), operator=self._operator(), frame=frame)
        self._trigger_context = self._context
        if not self.station.trigger(job):
            self._trigger_context = None
            self.statusBar().showMessage("Still inspecting the previous frame…" if not self.station.continuous
                                         else "Continuous mode inspects by itself: switch it off to inspect one part.", 3000)

    def _operator(self) -> str:
        """Who is logged with an inspection: the signed-in user; the free field only on an open station."""
        if self.user is None:
            return ""
        if self.user is SETUP_USER:
            return self.operator_edit.text().strip()
        return self.user.name

    def _on_result(self, event: InspectionDone) -> None:
        result = event.result
        self.last_result = result
        self.inspections_done += 1
        self.inspect_button.setText(INSPECT_LABEL)
        if self._click_time is not None and event.job.trigger == "operator":
            self.last_click_to_verdict_ms = (time.perf_counter() - self._click_time) * 1000.0
            self._click_time = None
        self.ms_label.setText(f"inference {result.inference_ms:.0f} ms")
        logged = f"#{result.inspection_id}" if result.inspection_id else "not logged"
        if event.job.trigger == "operator" and self._trigger_context != self._context:
            # The operator moved on while the model ran: this verdict is not the part on screen.
            self.statusBar().showMessage(f"The previous part's inspection ({result.verdict.verdict}, {logged}) finished after "
                                         "you moved on; the part on screen is NOT INSPECTED.", 15000)
            return
        # Continuous and line results show the very frame they judged (the overlay replaces the live picture).
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
        if event.job.trigger == "operator":
            self.part_edit.selectAll()  # the next scan replaces the serial

    def _on_inspection_failed(self, event: InspectionFailed) -> None:
        self._click_time = None
        self.inspect_button.setText(INSPECT_LABEL)
        self.statusBar().showMessage(event.message, 15000)
        if event.job.trigger != "operator" or self._trigger_context == self._context:
            self.current_result = None
            self._set_verdict("ERROR")
            self.detections_list.clear()
            self.detections_list.addItem(f"not inspected: {event.message}")

    def _invalidate(self) -> None:
        """What the operator looks at changed: no verdict is on screen until the next inspection."""
        self._context += 1
        self.current_result = None
        self._set_verdict(None)
        self._show_defect_list_placeholder()
        if self._holding_result:
            self._holding_result = False
            latest = self.feed.latest() if self.feed is not None else None
            if latest is not None:  # the live picture again, without the old overlay
                self._on_frame(latest)

    def _show_defect_list_placeholder(self) -> None:
        self.detections_list.clear()
        self.detections_list.addItem("not inspected — press Inspect (F5)")

    def _render_result(self) -> None:
        r = self.current_result
        inspector = self.inspector
        if r is None or inspector is None:
            return
        shown = r.displayed(self.display_threshold)
        overlay = inspector.annotate(r, shown, badge=False)  # the big label shows the verdict
        self.view.set_image(overlay, (r.frame.shape[1], r.frame.shape[0]), show_roi=False)
        self._set_verdict(r.verdict.verdict)
        self.detections_list.clear()
        failing = set(r.verdict.failing)
        several = len(r.regions) > 1
        if several:
            for region in r.regions:
                item = QListWidgetItem(f"region {region.name}: {region.verdict.verdict}")
                item.setForeground(QColor(LIST_FAIL_TEXT if region.verdict.verdict == "FAIL" else LIST_TEXT))
                self.detections_list.addItem(item)
        for i in sorted(shown, key=lambda k: (k not in failing, -r.detections[k].score)):
            d = r.detections[i]
            x1, y1, x2, y2 = d.box
            item = QListWidgetItem(("✖ FAIL  " if i in failing else "")
                                   + f"{d.label}  {d.score:.2f}   {x2 - x1:.0f}×{y2 - y1:.0f} px at ({x1:.0f}, {y1:.0f})"
                                   + (f"  [{r.detection_regions[i]}]" if several else ""))
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
        colours = self.detector.metadata.colours if self.detector is not None else {}
        pm.fill(QColor(colours.get(label, FALLBACK_COLOUR)))
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
        if on and not self._allowed("inspect", "inspect"):
            self.continuous_check.blockSignals(True)
            self.continuous_check.setChecked(False)
            self.continuous_check.blockSignals(False)
            return
        if on:
            self._invalidate()
        self.station.set_continuous(on)
        try:
            self.station.update_settings(continuous=on)
        except StationError as exc:
            self.statusBar().showMessage(str(exc), 10000)

    # -- thresholds: the recipe's (admin) and the display filter (anyone) -------------------

    @property
    def decision_threshold(self) -> float:
        """The recipe's threshold: detections at or above it are judged (else the model's default)."""
        recipe, detector = self.recipe, self.detector
        if recipe is not None and recipe.threshold is not None:
            return recipe.threshold
        return detector.metadata.default_threshold if detector is not None else 0.3

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
        recipe = self.recipe
        own = [r.name for r in recipe.regions if r.threshold is not None or r.rule is not None] if recipe else []
        self.rule_label.setText(
            f"Verdict rule (set by an admin): recipe <b>{recipe.name if recipe else '—'}</b>"
            f" v{recipe.version if recipe else 0}, FAIL at score ≥ <b>{self.decision_threshold:.2f}</b> within the class"
            " limits" + (f" (own rules: {', '.join(own)})" if own else "") + ". The slider only shows or hides boxes.")

    # -- region (the active recipe's) ----------------------------------------------------

    def _start_roi(self) -> None:
        if not self._allowed("settings", "change the recipe's regions"):
            return
        if self.view.image() is None:
            self.statusBar().showMessage("Open a source first: the region is drawn on its picture.", 5000)
            return
        self.back_to_live()
        self.view.start_drawing()
        self.statusBar().showMessage("Drag a rectangle around the inspection region (Esc cancels).", 8000)

    def _on_roi_drawn(self, roi: Roi) -> None:
        self._set_roi(roi)

    def _set_roi(self, roi: Roi | None) -> None:
        """Set a region of the active recipe (which one is asked when it has several); saves a new version."""
        recipe = self.recipe
        if recipe is None or not self._allowed("settings", "change the recipe's regions"):
            return
        index = 0
        if len(recipe.regions) > 1:
            names = [r.name for r in recipe.regions]
            name, ok = QInputDialog.getItem(self, "Inspection region", "Which region of the recipe?", names, 0, False)
            if not ok:
                self._show_regions()
                return
            index = names.index(name)
        regions = list(recipe.regions)
        regions[index] = replace(regions[index], roi=roi)
        self._invalidate()
        try:
            saved = self.station.save_recipe(replace(recipe, regions=tuple(regions)), self.user,
                                             reason="region set on the operator screen")
        except (ValueError, PermissionDenied, StationError) as exc:
            self.statusBar().showMessage(f"Region not changed: {exc}", 10000)
            self._show_regions()
            return
        self.statusBar().showMessage(f"Recipe {saved.name} v{saved.version}: region {regions[index].name} "
                                     + (f"{roi}" if roi else "whole frame"), 8000)

    def _on_recipe_chosen(self, index: int) -> None:
        name = self.recipe_combo.itemData(index)
        if not name or (self.recipe is not None and name == self.recipe.name):
            return
        try:
            self.station.select_recipe(name, by=self.user)
        except (PermissionDenied, StationError) as exc:
            self.statusBar().showMessage(f"Recipe not changed: {exc}", 10000)
            self._show_model_and_recipe()

    # -- settings -----------------------------------------------------------------

    def _on_operator_changed(self) -> None:
        if self.operator_edit.isVisible():
            try:
                self.station.update_settings(operator=self.operator_edit.text().strip())
            except StationError as exc:
                self.statusBar().showMessage(str(exc), 10000)

    def open_settings(self) -> None:
        if not self._allowed("settings", "change settings"):
            return
        from app.ui.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        self.station.set_engineering(True, self.user.name)
        try:
            accepted = dlg.exec() == SettingsDialog.DialogCode.Accepted
        finally:
            self.station.set_engineering(False, self.user.name)
        if accepted:
            self.apply_settings(dlg.result_settings())

    def apply_settings(self, new: StationSettings) -> None:
        if not self._allowed("settings", "change settings"):
            return
        old = self.settings
        try:
            self.station.apply_settings(new, self.user)
        except (StationError, PermissionDenied) as exc:
            self._problems.append(f"Settings not applied: {exc}")
        line_keys = ("modbus", "modbus_unit_id", "opcua", "opcua_allow_anonymous")
        if any(getattr(old, k) != getattr(self.settings, k) for k in line_keys):
            self._start_line()
        self._problems += self.station.problems
        self.station.problems.clear()
        self.setWindowTitle(f"Inspection station — {self.settings.station_name}")
        self._show_model_and_recipe()
        self._apply_user(self.user)
        self._show_problems()

    def open_recipes(self) -> None:
        if self.station.recipes is None:
            self.statusBar().showMessage("The inspection log is unavailable, and recipes live in it.", 10000)
            return
        if not self._allowed("settings", "edit recipes"):
            return
        from app.ui.recipes_dialog import RecipesDialog

        dialog = RecipesDialog(self.station, self.user, self)
        self.station.set_engineering(True, self.user.name)
        try:
            dialog.exec()
        finally:
            self.station.set_engineering(False, self.user.name)
        self.station.refresh_recipe()
        self._show_model_and_recipe()

    def open_opcua_clients(self) -> None:
        if not self._allowed("settings", "decide which OPC UA clients may connect"):
            return
        from app.ui.opcua_clients_dialog import OpcUaClientsDialog

        OpcUaClientsDialog(self.station, self.user, self).exec()

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

                self.reports = ReportsWidget(self.store, class_colours=colours, shifts=self.settings.shifts)
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
        if self.line is not None:
            self.line.stop()  # the line hears the station go before it stops
        self._unsubscribe()
        try:
            self.station.save_settings(self.user if self.user is not None and self.user is not SETUP_USER else None)
        except StationError as exc:
            print(f"warning: {exc}")
        # The inspection in flight finishes and is logged; undelivered results wait in the log for the next start.
        self.station.stop(drain=True, timeout=3.0)
        super().closeEvent(event)
