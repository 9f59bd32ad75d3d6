"""Settings dialog: station, camera, model, data folder and PASS/FAIL rules."""

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
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from app.inspection import DETECTION_FLOOR
from app.settings import KEEP_PICTURES, StationSettings
from app.verdict import ClassRule, VerdictRule
from detector.images import BIT_DEPTHS

KEEP_PICTURE_LABELS = {"all": "of every inspection", "fail": "of FAIL inspections only"}


class SettingsDialog(QDialog):
    def __init__(self, settings: StationSettings, class_names, parent: QWidget | None = None,
                 model_threshold: float | None = None):
        super().__init__(parent)
        self.setWindowTitle("Station settings")
        self._settings = settings
        self._result: StationSettings | None = None

        # The decision threshold is part of the verdict rule: detections at or above it are judged.
        self.threshold_default_check = QCheckBox(
            "the model's default" + (f" ({model_threshold:.2f})" if model_threshold is not None else ""))
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(DETECTION_FLOOR, 1.0)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.setValue(settings.threshold if settings.threshold is not None
                                     else model_threshold if model_threshold is not None else 0.3)
        self.threshold_default_check.setChecked(settings.threshold is None)
        self.threshold_spin.setEnabled(settings.threshold is not None)
        self.threshold_default_check.toggled.connect(lambda on: self.threshold_spin.setEnabled(not on))

        self.station_edit = QLineEdit(settings.station_name)
        self.source_edit = QLineEdit(settings.source)
        self.source_edit.setPlaceholderText("0 (first camera), rtsp://…, a video file, a picture folder")
        self.model_edit = QLineEdit(settings.model_path or "")
        self.model_edit.setPlaceholderText("the shipped model")
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

        rule = settings.rule
        self.unit_combo = QComboBox()
        self.unit_combo.addItems(["px", "mm"])
        self.unit_combo.setCurrentText(rule.unit)
        self.px_per_mm_spin = QDoubleSpinBox()
        self.px_per_mm_spin.setRange(0.0, 10000.0)
        self.px_per_mm_spin.setDecimals(3)
        self.px_per_mm_spin.setValue(rule.px_per_mm or 0.0)
        self.px_per_mm_spin.setSpecialValueText("not calibrated")

        names = list(dict.fromkeys([*class_names, *rule.classes]))
        self.rule_table = QTableWidget(len(names), 2)
        self.rule_table.setHorizontalHeaderLabels(["min score", "min size (longer side)"])
        self.rule_table.setVerticalHeaderLabels(names)
        self._rule_names = names
        for row, name in enumerate(names):
            r = rule.for_class(name)
            score = QDoubleSpinBox()
            score.setRange(0.0, 1.0)
            score.setSingleStep(0.05)
            score.setDecimals(2)
            score.setKeyboardTracking(False)
            score.setValue(r.min_score)
            size = QDoubleSpinBox()
            size.setKeyboardTracking(False)
            size.setRange(0.0, 100000.0)
            size.setDecimals(2)
            size.setValue(r.min_size)
            self.rule_table.setCellWidget(row, 0, score)
            self.rule_table.setCellWidget(row, 1, size)
        self.rule_table.resizeColumnsToContents()

        form = QFormLayout()
        form.addRow("Station name", self.station_edit)
        form.addRow("Camera / source", self.source_edit)
        form.addRow("Reconnect every", self.reconnect_spin)
        form.addRow("Camera bit depth", self.bit_depth_combo)
        form.addRow("Largest picture", self.megapixels_spin)
        form.addRow("Model file", self._with_browse(self.model_edit, self._browse_model))
        form.addRow("Keep pictures", self.keep_combo)
        form.addRow("Keep free on disk", self.reserve_spin)
        form.addRow("Data folder", self._with_browse(self.data_edit, self._browse_data))
        form.addRow("Sign out after idle", self.idle_spin)
        form.addRow("Shortest PIN", self.pin_length_spin)
        threshold_row = QWidget()
        tr = QHBoxLayout(threshold_row)
        tr.setContentsMargins(0, 0, 0, 0)
        tr.addWidget(self.threshold_spin)
        tr.addWidget(self.threshold_default_check, 1)
        form.addRow("Decision threshold", threshold_row)
        form.addRow("Size unit", self.unit_combo)
        form.addRow("Calibration (px per mm)", self.px_per_mm_spin)

        self.error_label = QLabel()
        self.error_label.setStyleSheet("color:#c62828;")
        self.error_label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("FAIL when a detection at or above the decision threshold also reaches both of its class's limits:"))
        layout.addWidget(self.rule_table)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def _with_browse(self, edit: QLineEdit, slot) -> QWidget:
        w = QWidget()
        row = QHBoxLayout(w)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        b = QPushButton("Browse…")
        b.clicked.connect(slot)
        row.addWidget(b)
        return w

    def _browse_model(self) -> None:
        from detector.api import default_model_path

        # Start beside the current model, or the shipped one (whose faster int8 file lies beside it).
        start = Path(self.model_edit.text().strip() or default_model_path()).parent
        f, _ = QFileDialog.getOpenFileName(self, "Model file", str(start), "Models (*.onnx *.pth)")
        if f:
            self.model_edit.setText(f)

    def _browse_data(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Data folder")
        if d:
            self.data_edit.setText(d)

    def build_settings(self) -> StationSettings:
        """Settings from the form; ValueError naming the field that is wrong."""
        station = self.station_edit.text().strip()
        if not station:
            raise ValueError("the station needs a name")
        classes = {}
        for row, name in enumerate(self._rule_names):
            classes[name] = ClassRule(self.rule_table.cellWidget(row, 0).value(), self.rule_table.cellWidget(row, 1).value())
        px_per_mm = self.px_per_mm_spin.value() or None
        rule = VerdictRule(classes=classes, unit=self.unit_combo.currentText(), px_per_mm=px_per_mm,
                           default=self._settings.rule.default)
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
            bit_depth=self.bit_depth_combo.currentData(),
            max_megapixels=self.megapixels_spin.value(),
            min_pin_length=self.pin_length_spin.value(),
            threshold=None if self.threshold_default_check.isChecked() else round(self.threshold_spin.value(), 2),
            rule=rule,
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
