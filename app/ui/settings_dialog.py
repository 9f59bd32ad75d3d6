"""Settings dialog: the station itself (name, camera, folders, outputs, plant database, sign-in); recipes hold the rules.

Industrial (GenICam) cameras: *Find cameras* lists those this PC sees; picking one makes it the source
(genicam://DEVICE-ID) and shows its settings block (pixel format, exposure, gain, sensor region, frame rate,
packet size, trigger), saved under its device ID; "first camera found" edits the "*" block.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import (
    ANY_CAMERA,
    CAMERA_PIXEL_FORMATS,
    CAMERA_TRIGGER_ACTIVATIONS,
    CAMERA_TRIGGER_FREE_RUN,
    CAMERA_TRIGGER_SOFTWARE,
    KEEP_PICTURES,
    CameraSettings,
    StationSettings,
    camera_from_dict,
    parse_setting,
)
from detector.images import BIT_DEPTHS

KEEP_PICTURE_LABELS = {"all": "of every inspection", "fail": "of FAIL inspections only"}
GENICAM = "genicam://"
TRIGGER_LABELS = {CAMERA_TRIGGER_FREE_RUN: "free-run (live view, continuous)",
                  CAMERA_TRIGGER_SOFTWARE: "software (one picture per inspection)",
                  **{f"line{n}": f"hardware: input line {n}" for n in range(4)}}


class SettingsDialog(QDialog):
    """The station's own settings (admins). What is inspected and how it is judged is in the recipes."""

    def __init__(self, settings: StationSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Station settings")
        self._settings = settings
        self._result: StationSettings | None = None

        self.station_edit = QLineEdit(settings.station_name)
        self.source_edit = QLineEdit(settings.source)
        self.source_edit.setPlaceholderText("0 (first camera), rtsp://…, a video file, a picture folder")
        self.model_edit = QLineEdit(settings.model_path or "")
        self.model_edit.setPlaceholderText("the shipped model (for recipes that name none)")
        self.data_edit = QLineEdit(settings.data_dir or "")
        self.data_edit.setPlaceholderText(str(settings.data_path))
        self.reconnect_spin = QDoubleSpinBox()
        self.reconnect_spin.setRange(0.5, 60.0)
        self.reconnect_spin.setSuffix(" s")
        self.reconnect_spin.setValue(settings.reconnect_seconds)
        self.keep_combo = QComboBox()
        for value in KEEP_PICTURES:
            self.keep_combo.addItem(KEEP_PICTURE_LABELS[value], value)
        self.keep_combo.setCurrentIndex(max(0, self.keep_combo.findData(settings.keep_pictures)))
        self.reserve_spin = QDoubleSpinBox()
        self.reserve_spin.setRange(0.0, 1_000_000.0)
        self.reserve_spin.setDecimals(0)
        self.reserve_spin.setSuffix(" MB")
        self.reserve_spin.setSpecialValueText("none")
        self.reserve_spin.setValue(settings.min_free_mb)
        self.reserve_spin.setToolTip("Pictures are no longer saved when the data folder's disk has less free space "
                                     "than this; inspections are still logged.")

        self.idle_spin = QDoubleSpinBox()
        self.idle_spin.setRange(0.0, 24 * 60.0)
        self.idle_spin.setDecimals(0)
        self.idle_spin.setSuffix(" min")
        self.idle_spin.setSpecialValueText("never")
        self.idle_spin.setValue(settings.idle_lock_minutes)
        self.pin_length_spin = QSpinBox()
        self.pin_length_spin.setRange(4, 64)
        self.pin_length_spin.setValue(settings.min_pin_length)
        self.operator_recipe_check = QCheckBox("operators may pick the recipe")
        self.operator_recipe_check.setChecked(settings.operator_may_select_recipe)
        self.modbus_edit = QLineEdit(settings.modbus)
        self.modbus_edit.setPlaceholderText("off; e.g. 0.0.0.0:5020 (docs/modbus.md)")
        self.modbus_unit_spin = QSpinBox()
        self.modbus_unit_spin.setRange(0, 247)
        self.modbus_unit_spin.setValue(settings.modbus_unit_id)
        self.modbus_unit_spin.setSpecialValueText("any")
        self.opcua_edit = QLineEdit(settings.opcua)
        self.opcua_edit.setPlaceholderText("off; e.g. opc.tcp://0.0.0.0:4840 (docs/opcua.md)")
        self.opcua_anonymous_check = QCheckBox("also anonymous, unencrypted (lab tests only)")
        self.opcua_anonymous_check.setChecked(settings.opcua_allow_anonymous)
        self.sinks_edit = QPlainTextEdit("\n".join(settings.sinks))
        self.sinks_edit.setPlaceholderText("one per line: mqtt://broker:1883/plant, https://mes.example/results")
        self.sinks_edit.setFixedHeight(60)

        self.bit_depth_combo = QComboBox()
        for bits in BIT_DEPTHS:
            self.bit_depth_combo.addItem(f"{bits} bit" + (" (as the file says, else full 16-bit range)" if bits == 16 else ""),
                                         bits)
        self.bit_depth_combo.setCurrentIndex(max(0, self.bit_depth_combo.findData(settings.bit_depth)))
        self.bit_depth_combo.setToolTip("Significant bits of 16-bit camera frames: a 12-bit camera's frames in 16-bit "
                                        "files hold 0..4095 and need 12, or they look black and pass every part.")
        self.megapixels_spin = QDoubleSpinBox()
        self.megapixels_spin.setRange(1.0, 1000.0)
        self.megapixels_spin.setDecimals(0)
        self.megapixels_spin.setSuffix(" MP")
        self.megapixels_spin.setValue(settings.max_megapixels)
        self.megapixels_spin.setToolTip("Pictures whose header declares more pixels are refused before decoding.")

        form = QFormLayout()
        form.addRow("Station name", self.station_edit)
        form.addRow("Camera / source", self.source_edit)
        form.addRow("Reconnect every", self.reconnect_spin)
        form.addRow("Camera bit depth", self.bit_depth_combo)
        form.addRow("Largest picture", self.megapixels_spin)
        form.addRow("Default model file", self._with_browse(self.model_edit, self._browse_model))
        form.addRow("Keep pictures", self.keep_combo)
        form.addRow("Keep free on disk", self.reserve_spin)
        form.addRow("Data folder", self._with_browse(self.data_edit, self._browse_data))
        form.addRow("Recipes", self.operator_recipe_check)
        form.addRow("Result outputs", self.sinks_edit)
        modbus_row = QWidget()
        mr = QHBoxLayout(modbus_row)
        mr.setContentsMargins(0, 0, 0, 0)
        mr.addWidget(self.modbus_edit, 1)
        mr.addWidget(QLabel("unit"))
        mr.addWidget(self.modbus_unit_spin)
        form.addRow("Modbus TCP (PLC)", modbus_row)
        opcua_row = QWidget()
        orow = QHBoxLayout(opcua_row)
        orow.setContentsMargins(0, 0, 0, 0)
        orow.addWidget(self.opcua_edit, 1)
        orow.addWidget(self.opcua_anonymous_check)
        form.addRow("OPC UA (PLC)", opcua_row)
        form.addRow("Sign out after idle", self.idle_spin)
        form.addRow("Shortest PIN", self.pin_length_spin)

        self.error_label = QLabel()
        self.error_label.setStyleSheet("color:#c62828;")
        self.error_label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        groups = QHBoxLayout()  # side by side: the dialog stays short enough for a 1080-pixel screen
        groups.addWidget(self._camera_group(settings), 1)
        groups.addWidget(self._plant_group(settings), 1, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(groups)
        layout.addWidget(QLabel("Regions, model and PASS/FAIL rule of each product type: File ▸ Recipes."))
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    # -- the plant database (docs/plant.md) ----------------------------------------------------------

    def _plant_group(self, settings: StationSettings) -> QGroupBox:
        self.plant_url_edit = QLineEdit(settings.plant_db_url)
        self.plant_url_edit.setPlaceholderText("off; postgresql://LOGIN@HOST/DB")
        self.plant_url_edit.setToolTip("plant_db_url: the station's login, host, port and database, never a password (e.g."
                                       " postgresql://line3@db.plant/inspections); TLS options such as"
                                       " ?sslmode=verify-full&sslrootcert=... go to libpq as they are")
        self.plant_password_file_edit = QLineEdit(settings.plant_db_password_file)
        self.plant_password_file_edit.setPlaceholderText("first line: the password")
        self.plant_password_file_edit.setToolTip("plant_db_password_file: its first line is the password (chmod 600)")
        self.plant_password_env_edit = QLineEdit(settings.plant_db_password_env)
        self.plant_password_env_edit.setPlaceholderText("or: an environment variable")
        self.plant_password_env_edit.setToolTip("plant_db_password_env (used when no password file is set; with"
                                                " neither, libpq's ~/.pgpass)")
        self.plant_store_edit = QLineEdit(settings.plant_picture_store)
        self.plant_store_edit.setPlaceholderText("none: pictures stay here")
        self.plant_store_edit.setToolTip("plant_picture_store: the plant's picture share, mounted on this PC")
        self.plant_warn_spin = QDoubleSpinBox()
        self.plant_warn_spin.setRange(0.0, 1_000_000.0)
        self.plant_warn_spin.setDecimals(0)
        self.plant_warn_spin.setSuffix(" min")
        self.plant_warn_spin.setSpecialValueText("never")
        self.plant_warn_spin.setValue(settings.plant_backlog_warn_minutes)
        self.plant_warn_spin.setToolTip("plant_backlog_warn_minutes: the status bar warns when the oldest inspection"
                                        " not yet in the plant database has waited this long")
        form = QFormLayout()
        form.addRow("Database URL", self.plant_url_edit)
        form.addRow("Password file", self._with_browse(self.plant_password_file_edit, self._browse_plant_password))
        form.addRow("Password variable", self.plant_password_env_edit)
        form.addRow("Picture store", self._with_browse(self.plant_store_edit, self._browse_plant_store))
        form.addRow("Warn when behind by", self.plant_warn_spin)
        group = QGroupBox("Plant database (PostgreSQL)")
        group.setLayout(form)
        return group

    def _browse_plant_password(self) -> None:
        start = self.plant_password_file_edit.text().strip()
        f, _ = QFileDialog.getOpenFileName(self, "Plant database password file", str(Path(start).parent) if start else "")
        if f:
            self.plant_password_file_edit.setText(f)

    def _browse_plant_store(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Plant picture store", self.plant_store_edit.text().strip())
        if d:
            self.plant_store_edit.setText(d)

    def _plant_fields(self) -> dict:
        """The plant database fields as settings, checked as the settings file's are; ValueError naming the field."""
        values = {}
        for key, what, text in (("plant_db_url", "plant database URL", self.plant_url_edit.text()),
                                ("plant_db_password_env", "plant database password variable",
                                 self.plant_password_env_edit.text().strip())):
            try:
                values[key] = parse_setting(key, text)
            except ValueError as exc:
                raise ValueError(f"{what} {exc}") from None
        values["plant_db_password_file"] = self.plant_password_file_edit.text().strip()
        values["plant_picture_store"] = self.plant_store_edit.text().strip()
        values["plant_backlog_warn_minutes"] = self.plant_warn_spin.value()
        return values

    # -- industrial cameras ----------------------------------------------------------------------

    def _camera_group(self, settings: StationSettings) -> QGroupBox:
        self._cameras = dict(settings.cameras)  # device ID -> CameraSettings, as edited here
        self._camera_key: str | None = None  # the block the fields below show
        self.camera_combo = QComboBox()
        self.find_cameras_button = QPushButton("Find cameras")
        self.find_cameras_button.setToolTip("List the GigE Vision and USB3 Vision cameras this PC sees (about 1 s)")
        self.find_cameras_button.clicked.connect(self.find_cameras)
        self.camera_note = QLabel()
        self.camera_note.setWordWrap(True)
        self.pixel_format_combo = QComboBox()
        self.pixel_format_combo.addItem("as the camera is set (Mono8 if it is not mono)", None)
        for name, bits in CAMERA_PIXEL_FORMATS.items():
            self.pixel_format_combo.addItem(f"{name} ({bits} bit)", name)
        self.exposure_edit = QLineEdit()
        self.gain_edit = QLineEdit()
        self.camera_roi_edit = QLineEdit()
        self.frame_rate_edit = QLineEdit()
        self.packet_size_edit = QLineEdit()
        for edit, hint in ((self.exposure_edit, "µs"), (self.gain_edit, "dB"), (self.camera_roi_edit, "x,y,w,h px"),
                           (self.frame_rate_edit, "frames/s"), (self.packet_size_edit, "bytes, GigE only")):
            edit.setPlaceholderText(f"as the camera is set ({hint})")
        self.trigger_combo = QComboBox()
        for value, label in TRIGGER_LABELS.items():
            self.trigger_combo.addItem(label, value)
        self.activation_combo = QComboBox()
        for value in CAMERA_TRIGGER_ACTIVATIONS:
            self.activation_combo.addItem(f"{value} edge", value)
        self.trigger_timeout_spin = QDoubleSpinBox()
        self.trigger_timeout_spin.setRange(0.1, 60.0)
        self.trigger_timeout_spin.setSuffix(" s")
        self.trigger_timeout_spin.setToolTip("How long a triggered picture may take (exposure and transfer) before "
                                             "the inspection fails")

        picker = QWidget()
        row = QHBoxLayout(picker)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.camera_combo, 1)
        row.addWidget(self.find_cameras_button)
        form = QFormLayout()
        form.addRow("Camera", picker)
        form.addRow("", self.camera_note)
        form.addRow("Pixel format", self.pixel_format_combo)
        form.addRow("Exposure", self.exposure_edit)
        form.addRow("Gain", self.gain_edit)
        form.addRow("Sensor region", self.camera_roi_edit)
        form.addRow("Frame rate", self.frame_rate_edit)
        form.addRow("Packet size", self.packet_size_edit)
        form.addRow("Trigger", self.trigger_combo)
        form.addRow("Trigger edge", self.activation_combo)
        form.addRow("Trigger timeout", self.trigger_timeout_spin)
        group = QGroupBox("Industrial camera (GenICam: GigE Vision, USB3 Vision)")
        group.setLayout(form)

        self.camera_combo.addItem("first camera found (genicam://)", ANY_CAMERA)
        source = settings.source.strip()
        if source.lower().startswith(GENICAM) and source[len(GENICAM):].strip("/"):
            device_id = source[len(GENICAM):].strip("/")
            self.camera_combo.addItem(f"{device_id} (not searched for yet)", device_id)
            self.camera_combo.setCurrentIndex(1)
        self._show_camera(self.camera_combo.currentData())
        self.camera_combo.currentIndexChanged.connect(self._camera_picked)
        return group

    def find_cameras(self) -> None:
        """List the cameras found in the picker (the one picked stays picked)."""
        from app.sources import SourceError
        from app.sources_genicam import list_cameras

        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            found = list_cameras()
        except SourceError as exc:  # Aravis or PyGObject not installed: say how
            self.camera_note.setText(str(exc))
            return
        finally:
            QApplication.restoreOverrideCursor()
        current = self.camera_combo.currentData()
        self.camera_combo.blockSignals(True)
        while self.camera_combo.count() > 1:
            self.camera_combo.removeItem(1)
        for info in found:
            self.camera_combo.addItem(f"{info.device_id}: {info}", info.device_id)
        if current not in [info.device_id for info in found] and current != ANY_CAMERA:
            self.camera_combo.addItem(f"{current} (not found now)", current)
        self.camera_combo.setCurrentIndex(max(0, self.camera_combo.findData(current)))
        self.camera_combo.blockSignals(False)
        self.camera_note.setText(f"{len(found)} camera{'s' if len(found) != 1 else ''} found" if found else
                                 "no camera found: check the cable, the camera's power and its IP address (same subnet)")

    def _camera_picked(self) -> None:
        """A camera picked: it becomes the source, and its settings are shown (the previous one's are kept)."""
        try:
            self._cameras[self._camera_key] = self._camera_fields()
        except ValueError as exc:
            self.error_label.setText(str(exc))
        key = self.camera_combo.currentData()
        self.source_edit.setText(GENICAM + ("" if key == ANY_CAMERA else key))
        self._show_camera(key)

    def _show_camera(self, key: str) -> None:
        self._camera_key = key
        camera = self._cameras.get(key, CameraSettings())
        self.pixel_format_combo.setCurrentIndex(max(0, self.pixel_format_combo.findData(camera.pixel_format)))
        for edit, value in ((self.exposure_edit, camera.exposure_us), (self.gain_edit, camera.gain_db),
                            (self.frame_rate_edit, camera.frame_rate), (self.packet_size_edit, camera.packet_size)):
            edit.setText("" if value is None else f"{value:g}")
        self.camera_roi_edit.setText(",".join(map(str, camera.roi)) if camera.roi else "")
        if self.trigger_combo.findData(camera.trigger) < 0:
            self.trigger_combo.addItem(f"hardware: input line {camera.trigger[4:]}", camera.trigger)
        self.trigger_combo.setCurrentIndex(self.trigger_combo.findData(camera.trigger))
        self.activation_combo.setCurrentIndex(max(0, self.activation_combo.findData(camera.trigger_activation)))
        self.trigger_timeout_spin.setValue(camera.trigger_timeout)

    def _camera_fields(self) -> CameraSettings:
        """The fields as the shown camera's settings; ValueError naming the field that is wrong."""
        block = {"pixel_format": self.pixel_format_combo.currentData(), "trigger": self.trigger_combo.currentData(),
                 "trigger_activation": self.activation_combo.currentData(),
                 "trigger_timeout": self.trigger_timeout_spin.value()}
        for key, edit in (("exposure_us", self.exposure_edit), ("gain_db", self.gain_edit),
                          ("frame_rate", self.frame_rate_edit), ("packet_size", self.packet_size_edit),
                          ("roi", self.camera_roi_edit)):
            block[key] = _field_value(key, edit.text().strip())
        camera, problems = camera_from_dict(block)
        if problems:
            raise ValueError(f"camera {self._camera_key}: {problems[0].replace('; using the default', '')}")
        return camera

    def _with_browse(self, edit: QLineEdit, slot) -> QWidget:
        return with_browse(edit, slot)

    def _browse_model(self) -> None:
        browse_model(self, self.model_edit)

    def _browse_data(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Data folder")
        if d:
            self.data_edit.setText(d)

    def build_settings(self) -> StationSettings:
        """Settings from the form; ValueError naming the field that is wrong."""
        station = self.station_edit.text().strip()
        if not station:
            raise ValueError("the station needs a name")
        self._cameras[self._camera_key] = self._camera_fields()
        cameras = tuple((k, c) for k, c in self._cameras.items() if c != CameraSettings() or k in dict(self._settings.cameras))
        sinks = tuple(line.strip() for line in self.sinks_edit.toPlainText().splitlines() if line.strip())
        if self.modbus_edit.text().strip():
            from app.line.modbus import parse_address

            parse_address(self.modbus_edit.text())  # ValueError names a bad address now
        for url in sinks:
            from app.outputs import open_output

            open_output(url)  # ValueError names a bad URL now, not at the next start (nothing connects yet)
        plant = self._plant_fields()  # ValueError: a URL with a password in it, a bad variable name
        return replace(
            self._settings,
            station_name=station,
            source=self.source_edit.text().strip(),
            model_path=self.model_edit.text().strip() or None,
            data_dir=self.data_edit.text().strip() or None,
            reconnect_seconds=self.reconnect_spin.value(),
            keep_pictures=self.keep_combo.currentData(),
            min_free_mb=self.reserve_spin.value(),
            idle_lock_minutes=self.idle_spin.value(),
            min_pin_length=self.pin_length_spin.value(),
            operator_may_select_recipe=self.operator_recipe_check.isChecked(),
            sinks=sinks,
            modbus=self.modbus_edit.text().strip(),
            modbus_unit_id=self.modbus_unit_spin.value(),
            opcua=self.opcua_edit.text().strip(),
            opcua_allow_anonymous=self.opcua_anonymous_check.isChecked(),
            bit_depth=self.bit_depth_combo.currentData(),
            max_megapixels=self.megapixels_spin.value(),
            cameras=cameras,
            **plant,
        )

    def accept(self) -> None:
        try:
            self._result = self.build_settings()
        except ValueError as exc:
            self.error_label.setText(str(exc))
            return
        super().accept()

    def result_settings(self) -> StationSettings:
        return self._result if self._result is not None else self._settings


def _field_value(key: str, text: str):
    """What a camera field's text stands for: None (empty: as the camera is set), a number, or [x, y, w, h]."""
    if not text:
        return None
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"camera {key}: {text!r} is not a number") from None
    numbers = [int(n) if n.is_integer() else n for n in numbers]
    return numbers if key == "roi" else numbers[0] if len(numbers) == 1 else text


def with_browse(edit: QLineEdit, slot) -> QWidget:
    """A line edit with a Browse… button beside it."""
    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    b = QPushButton("Browse…")
    b.clicked.connect(slot)
    row.addWidget(b)
    return w


def browse_model(parent: QWidget, edit: QLineEdit) -> None:
    """Pick a model file, starting beside the current one or the shipped one (whose int8 file lies beside it)."""
    from detector.api import default_model_path

    start = Path(edit.text().strip() or default_model_path()).parent
    f, _ = QFileDialog.getOpenFileName(parent, "Model file", str(start), "Models (*.onnx *.pth)")
    if f:
        edit.setText(f)
