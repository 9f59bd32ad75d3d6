"""Settings dialog: the station itself (name, camera, folders, outputs, sign-in); recipes hold the rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import KEEP_PICTURES, StationSettings
from detector.images import BIT_DEPTHS

KEEP_PICTURE_LABELS = {"all": "of every inspection", "fail": "of FAIL inspections only"}


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
        layout.addWidget(QLabel("Regions, model and PASS/FAIL rule of each product type: File ▸ Recipes."))
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

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
        sinks = tuple(line.strip() for line in self.sinks_edit.toPlainText().splitlines() if line.strip())
        for url in sinks:
            from app.outputs import open_output

            open_output(url)  # ValueError names a bad URL now, not at the next start (nothing connects yet)
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
            bit_depth=self.bit_depth_combo.currentData(),
            max_megapixels=self.megapixels_spin.value(),
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
