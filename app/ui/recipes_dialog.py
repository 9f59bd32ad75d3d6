"""Recipe editor (admins): create, edit, copy and delete product recipes; every save is a new version.

Left: the recipes. Right: the selected one's name, line id, model file,
regions (name and rectangle; each may carry its own rule) and rule, with the
version history below. Saving asks for a reason, which goes into the audit
record with the old and the new definition.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.recipes import WHOLE_FRAME, Recipe, Region
from app.station import Station, StationError
from app.ui.rule_editor import RuleEditor
from app.ui.settings_dialog import browse_model, with_browse
from app.users import PermissionDenied, User
from app.verdict import VerdictRule
from detector.evaluate import verdict_counts_text
from detector.regions import Roi

REGION_COLUMNS = ["name", "x", "y", "width", "height", "own rule"]


class RegionRuleDialog(QDialog):
    """A region's own rule, or the recipe's (unticked)."""

    def __init__(self, region: Region, recipe_rule: VerdictRule, class_names, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Rule of region {region.name}")
        self.own = QCheckBox("this region has its own rule (else the recipe's)")
        self.own.setChecked(region.rule is not None or region.threshold is not None)
        self.editor = RuleEditor(region.rule or recipe_rule, region.threshold, class_names, "the recipe's threshold", 0.3)
        self.editor.setEnabled(self.own.isChecked())
        self.own.toggled.connect(self.editor.setEnabled)
        self.error = QLabel()
        self.error.setStyleSheet("color:#c62828;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for w in (self.own, self.editor, self.error, buttons):
            layout.addWidget(w)
        self.result_region: Region | None = None
        self._region = region

    def accept(self) -> None:
        try:
            rule = self.editor.rule() if self.own.isChecked() else None
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        threshold = self.editor.threshold() if self.own.isChecked() else None
        self.result_region = replace(self._region, rule=rule, threshold=threshold)
        super().accept()


def model_validation_text(detector) -> str:
    """The running model's recorded validation: AP50 per class and, where measured, PASS/FAIL per picture."""
    if detector is None:
        return "no model loaded"
    val = (detector.metadata.training or {}).get("validation")
    if not val:
        return f"{detector.model_path.name}: no validation recorded in the file"
    aps = ", ".join(f"{name} {row['ap50']:.3f}" for name, row in val.get("classes", {}).items()
                    if row.get("ap50") is not None)
    text = f"{detector.model_path.name} (running), on {val.get('n_images', '?')} validation pictures: AP50 {aps}"
    verdicts = val.get("verdicts") or []
    text += "".join(f"; {verdict_counts_text(v)}" for v in verdicts)
    if not verdicts:
        text += " (no PASS/FAIL per picture recorded: `python -m detector model FILE --validate SPLIT` adds it)"
    return text


def threshold_binding_text(recipe: Recipe, model_now: str | None) -> str:
    """Whether the recipe's explicit thresholds were set for the model it runs with (`model_now`: its
    weights_id, None when that model cannot be loaded)."""
    if not recipe.explicit_thresholds:
        return "the model's default threshold (nothing to confirm)"
    if model_now is None:
        return f"{recipe.thresholds_origin}; no model loaded to check them against"
    if recipe.threshold_model == model_now:
        return f"set for the model it runs with ({model_now})"
    if recipe.threshold_model is None:  # built in code, never saved
        return f"not yet bound to a model: saving binds them to {model_now}"
    return (f"{recipe.thresholds_origin}, but it runs with {model_now}: inspections are refused until an admin "
            f"reviews them and saves (which confirms them for {model_now})")


class RecipesDialog(QDialog):
    def __init__(self, station: Station, user: User, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Recipes")
        self.resize(1000, 700)
        self.station = station
        self.user = user
        self.book = station.recipes
        detector = station.detector
        self.class_names = tuple(detector.metadata.class_names) if detector is not None else ()
        self.model_default = detector.metadata.default_threshold if detector is not None else 0.3
        self._regions: list[Region] = []
        self._editing: Recipe | None = None

        self.list = QListWidget()
        self.list.currentTextChanged.connect(self._show)
        new_button, copy_button, delete_button = QPushButton("New…"), QPushButton("Copy…"), QPushButton("Delete…")
        new_button.clicked.connect(self._new)
        copy_button.clicked.connect(self._copy)
        delete_button.clicked.connect(self._delete)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.list, 1)
        row = QHBoxLayout()
        for b in (new_button, copy_button, delete_button):
            row.addWidget(b)
        lv.addLayout(row)

        self.name_label = QLabel()
        self.external_edit = QLineEdit()
        self.external_edit.setPlaceholderText("the line's id for it (default: the name)")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("the station's default model")
        # What the running model measured, beside the threshold an admin sets: escapes against false rejects.
        self.validation_label = QLabel(model_validation_text(detector))
        self.validation_label.setWordWrap(True)
        self.binding_label = QLabel()
        self.binding_label.setWordWrap(True)
        self.regions_table = QTableWidget(0, len(REGION_COLUMNS))
        self.regions_table.setHorizontalHeaderLabels(REGION_COLUMNS)
        self.regions_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.regions_table.cellDoubleClicked.connect(self._edit_region_rule)
        add_region, remove_region = QPushButton("Add region"), QPushButton("Remove region")
        add_region.clicked.connect(self._add_region)
        remove_region.clicked.connect(self._remove_region)
        self.rule_host = QVBoxLayout()
        self.rule_editor: RuleEditor | None = None
        self.history = QTableWidget(0, 4)
        self.history.setHorizontalHeaderLabels(["version", "saved", "by", "state"])
        self.history.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.error = QLabel()
        self.error.setStyleSheet("color:#c62828;")
        self.error.setWordWrap(True)
        self.save_button = QPushButton("Save new version…")
        self.save_button.clicked.connect(self._save)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)

        right = QWidget()
        rv = QVBoxLayout(right)
        form = QFormLayout()
        form.addRow("Recipe", self.name_label)
        form.addRow("Line id", self.external_edit)
        form.addRow("Model file", with_browse(self.model_edit, lambda: browse_model(self, self.model_edit)))
        form.addRow("Its validation", self.validation_label)
        form.addRow("Thresholds", self.binding_label)
        rv.addLayout(form)
        rv.addWidget(QLabel("Inspection regions (frame pixels; empty = whole frame; double-click 'own rule' to set one):"))
        rv.addWidget(self.regions_table)
        row = QHBoxLayout()
        row.addWidget(add_region)
        row.addWidget(remove_region)
        row.addStretch(1)
        rv.addLayout(row)
        rv.addLayout(self.rule_host)
        rv.addWidget(QLabel("Versions:"))
        rv.addWidget(self.history)
        rv.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.save_button)
        row.addWidget(close)
        rv.addLayout(row)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 3)
        QVBoxLayout(self).addWidget(splitter)
        self.refresh(station.recipe.name if station.recipe else None)

    # -- showing ------------------------------------------------------------------

    def refresh(self, select: str | None = None) -> None:
        names = [r.name for r in self.book.list()]
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems(names)
        self.list.blockSignals(False)
        if names:
            self.list.setCurrentRow(names.index(select) if select in names else 0)
            self._show(self.list.currentItem().text())

    def _show(self, name: str) -> None:
        recipe = self.book.get(name) if name else None
        if recipe is None:
            return
        self._editing = recipe
        self.error.setText("")
        self.validation_label.setText(model_validation_text(self.station.detector))
        weights = self.station.weights_for(recipe)
        self.binding_label.setText(threshold_binding_text(recipe, weights))
        refused = weights is not None and recipe.threshold_model_problem(weights)
        self.binding_label.setStyleSheet("color:#c62828;" if refused else "")
        self.name_label.setText(f"<b>{recipe.name}</b> v{recipe.version}")
        self.external_edit.setText(recipe.external_id)
        self.model_edit.setText(recipe.model_path or "")
        self._regions = list(recipe.regions)
        self._fill_regions()
        if self.rule_editor is not None:
            self.rule_host.removeWidget(self.rule_editor)
            self.rule_editor.deleteLater()
        self.rule_editor = RuleEditor(recipe.rule, recipe.threshold, self.class_names,
                                      f"the model's default ({self.model_default:.2f})", self.model_default)
        self.rule_host.addWidget(self.rule_editor)
        versions = self.book.history(recipe.name)
        self.history.setRowCount(len(versions))
        for row, v in enumerate(reversed(versions)):
            for col, text in enumerate((str(v["version"]), v["created_at"][:19].replace("T", " "), v["created_by"],
                                        "deleted" if v["deleted"] else "")):
                self.history.setItem(row, col, QTableWidgetItem(text))

    def _fill_regions(self) -> None:
        self.regions_table.setRowCount(len(self._regions))
        for row, region in enumerate(self._regions):
            values = [region.name] + ([str(v) for v in region.roi.to_list()] if region.roi else ["", "", "", ""])
            for col, text in enumerate(values):
                self.regions_table.setItem(row, col, QTableWidgetItem(text))
            own = QTableWidgetItem("own rule" if (region.rule or region.threshold is not None) else "recipe's")
            own.setFlags(own.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.regions_table.setItem(row, 5, own)

    # -- editing ------------------------------------------------------------------

    def _regions_from_table(self) -> list[Region]:
        """The regions as typed; ValueError naming the row that is wrong."""
        out = []
        for row, region in enumerate(self._regions):
            cells = [(self.regions_table.item(row, col).text() if self.regions_table.item(row, col) else "").strip()
                     for col in range(5)]
            name, numbers = cells[0], cells[1:]
            if not any(numbers):
                roi = None
            elif all(numbers):
                try:
                    roi = Roi.from_list(numbers)
                except ValueError as exc:
                    raise ValueError(f"region {row + 1} ({name}): {exc}") from None
            else:
                raise ValueError(f"region {row + 1} ({name}): give x, y, width and height, or none for the whole frame")
            out.append(replace(region, name=name, roi=roi))
        return out

    def _add_region(self) -> None:
        try:
            self._regions = self._regions_from_table()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        used = {r.name for r in self._regions}
        n = len(self._regions) + 1
        while f"region {n}" in used:
            n += 1
        self._regions.append(Region(f"region {n}", Roi(0, 0, 100, 100)))
        self._fill_regions()

    def _remove_region(self) -> None:
        rows = sorted({i.row() for i in self.regions_table.selectedIndexes()}, reverse=True)
        if not rows:
            self.error.setText("Select a region first.")
            return
        try:
            self._regions = self._regions_from_table()
        except ValueError:
            pass
        for row in rows:
            del self._regions[row]
        if not self._regions:
            self._regions = [Region(WHOLE_FRAME)]
        self._fill_regions()

    def _edit_region_rule(self, row: int, column: int) -> None:
        if column != 5 or self._editing is None:
            return
        try:
            self._regions = self._regions_from_table()
            rule = self.rule_editor.rule()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        dialog = RegionRuleDialog(self._regions[row], rule, self.class_names, self)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.result_region is not None:
            self._regions[row] = dialog.result_region
            self._fill_regions()

    def edited_recipe(self) -> Recipe:
        """The recipe as edited (not saved); ValueError naming what is wrong."""
        if self._editing is None:
            raise ValueError("no recipe selected")
        return replace(self._editing, external_id=self.external_edit.text().strip(),
                       model_path=self.model_edit.text().strip() or None, regions=tuple(self._regions_from_table()),
                       rule=self.rule_editor.rule(), threshold=self.rule_editor.threshold())

    def save(self, reason: str) -> Recipe | None:
        """Save the edited recipe as a new version (the station's active one follows); None and the error shown if not."""
        try:
            recipe = self.station.bind_thresholds(self.edited_recipe())  # saving confirms them for the model
            if self._editing is not None and recipe.definition() == self._editing.definition() \
                    and recipe.external_id == self._editing.external_id:
                raise ValueError("nothing changed")
            saved = self.station.save_recipe(recipe, self.user, reason)
        except (ValueError, PermissionDenied, StationError) as exc:
            self.error.setText(str(exc))
            return None
        self.refresh(saved.name)
        return saved

    def _save(self) -> None:
        reason, ok = QInputDialog.getText(self, "Save recipe", "Why this change (kept in the audit trail)?")
        if ok:
            self.save(reason.strip())

    def _new(self) -> None:
        name, ok = QInputDialog.getText(self, "New recipe", "Name of the product type:")
        if not ok or not name.strip():
            return
        try:
            if self.book.get(name) is not None:
                raise ValueError(f"a recipe named {name.strip()!r} exists already")
            saved = self.station.save_recipe(Recipe(name.strip(), rule=self._editing.rule if self._editing else VerdictRule()),
                                             self.user, "new recipe")
        except (ValueError, PermissionDenied, StationError) as exc:
            self.error.setText(str(exc))
            return
        self.refresh(saved.name)

    def _copy(self) -> None:
        if self._editing is None:
            return
        name, ok = QInputDialog.getText(self, "Copy recipe", f"Name of the copy of {self._editing.name}:")
        if not ok or not name.strip():
            return
        try:
            saved = self.book.copy(self._editing.name, name.strip(), self.user)
        except (ValueError, PermissionDenied) as exc:
            self.error.setText(str(exc))
            return
        self.refresh(saved.name)

    def _delete(self) -> None:
        if self._editing is None:
            return
        if self.station.recipe is not None and self.station.recipe.name == self._editing.name:
            self.error.setText("This recipe is active: select another one on the operator screen first.")
            return
        reason, ok = QInputDialog.getText(self, "Delete recipe", f"Why delete {self._editing.name}? (its versions stay in the log)")
        if not ok:
            return
        try:
            self.book.delete(self._editing.name, self.user, reason.strip())
        except (ValueError, PermissionDenied) as exc:
            self.error.setText(str(exc))
            return
        self.refresh()
