"""The verdict rule editor: decision threshold, size unit and calibration, and each class's limits.

Used by the recipe editor for a recipe's rule and for a region's own rule.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from app.inspection import DETECTION_FLOOR
from app.verdict import ClassRule, VerdictRule


def _spin(low: float, high: float, decimals: int, step: float, value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setKeyboardTracking(False)  # a typed 0.45 is 0.45, not 0.4 on the way there
    spin.setValue(value)
    return spin


class RuleEditor(QWidget):
    """Edits one VerdictRule and its decision threshold (None: `fallback_label`, e.g. the model's default)."""

    def __init__(self, rule: VerdictRule, threshold: float | None, class_names, fallback_label: str,
                 fallback_value: float, parent: QWidget | None = None):
        super().__init__(parent)
        self.threshold_default_check = QCheckBox(fallback_label)
        self.threshold_spin = _spin(DETECTION_FLOOR, 1.0, 2, 0.05, threshold if threshold is not None else fallback_value)
        self.threshold_default_check.setChecked(threshold is None)
        self.threshold_spin.setEnabled(threshold is not None)
        self.threshold_default_check.toggled.connect(lambda on: self.threshold_spin.setEnabled(not on))

        self.unit_combo = QComboBox()
        self.unit_combo.addItems(["px", "mm"])
        self.unit_combo.setCurrentText(rule.unit)
        self.px_per_mm_spin = _spin(0.0, 10000.0, 3, 0.1, rule.px_per_mm or 0.0)
        self.px_per_mm_spin.setSpecialValueText("not calibrated")

        self._names = list(dict.fromkeys([*class_names, *rule.classes]))
        self.table = QTableWidget(len(self._names), 2)
        self.table.setHorizontalHeaderLabels(["min score", "min size (longer side)"])
        self.table.setVerticalHeaderLabels(self._names)
        for row, name in enumerate(self._names):
            r = rule.for_class(name)
            self.table.setCellWidget(row, 0, _spin(0.0, 1.0, 2, 0.05, r.min_score))
            self.table.setCellWidget(row, 1, _spin(0.0, 100000.0, 2, 1.0, r.min_size))
        self.table.resizeColumnsToContents()
        self._default = rule.default

        threshold_row = QWidget()
        tr = QHBoxLayout(threshold_row)
        tr.setContentsMargins(0, 0, 0, 0)
        tr.addWidget(self.threshold_spin)
        tr.addWidget(self.threshold_default_check, 1)
        form = QFormLayout()
        form.addRow("Decision threshold", threshold_row)
        form.addRow("Size unit", self.unit_combo)
        form.addRow("Calibration (px per mm)", self.px_per_mm_spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(QLabel("FAIL when a detection at or above the decision threshold also reaches both of its "
                                "class's limits:"))
        layout.addWidget(self.table)

    def threshold(self) -> float | None:
        return None if self.threshold_default_check.isChecked() else round(self.threshold_spin.value(), 2)

    def rule(self) -> VerdictRule:
        """The rule as edited; ValueError naming what is wrong (e.g. mm without a calibration)."""
        classes = {name: ClassRule(self.table.cellWidget(row, 0).value(), self.table.cellWidget(row, 1).value())
                   for row, name in enumerate(self._names)}
        return VerdictRule(classes=classes, unit=self.unit_combo.currentText(),
                           px_per_mm=self.px_per_mm_spin.value() or None, default=self._default)
