"""Admins manage local users and roles (every change lands in the audit trail)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.users import ROLES, PermissionDenied, User, UserDirectory


class UsersDialog(QDialog):
    def __init__(self, users: UserDirectory, admin: User, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Users and roles")
        self.users = users
        self.admin = admin
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["user", "role", "status"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

        self.name_edit = QLineEdit()
        self.role_combo = QComboBox()
        self.role_combo.addItems(ROLES)
        self.pin_edit = QLineEdit()
        self.pin_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.add_button = QPushButton("Add user")
        self.add_button.clicked.connect(self._add)
        add_box = QGroupBox("New user")
        form = QFormLayout(add_box)
        form.addRow("Name", self.name_edit)
        form.addRow("Role", self.role_combo)
        form.addRow("PIN", self.pin_edit)
        form.addRow(self.add_button)

        self.set_role_combo = QComboBox()
        self.set_role_combo.addItems(ROLES)
        self.set_role_button = QPushButton("Set role of selected")
        self.set_role_button.clicked.connect(self._set_role)
        self.toggle_button = QPushButton("Disable / enable selected")
        self.toggle_button.clicked.connect(self._toggle)
        row = QHBoxLayout()
        row.addWidget(self.set_role_combo)
        row.addWidget(self.set_role_button)
        row.addWidget(self.toggle_button)

        self.message = QLabel()
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(row)
        layout.addWidget(add_box)
        layout.addWidget(self.message)
        self.refresh()

    def refresh(self) -> None:
        rows = self.users.list()
        self.table.setRowCount(len(rows))
        for i, u in enumerate(rows):
            for col, text in enumerate((u["name"], u["role"], "active" if u["active"] else "disabled")):
                self.table.setItem(i, col, QTableWidgetItem(text))

    def _selected(self) -> dict | None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if len(rows) != 1:
            self.message.setText("Select one user first.")
            return None
        r = rows.pop()
        return {"name": self.table.item(r, 0).text(), "active": self.table.item(r, 2).text() == "active"}

    def _run(self, action, done: str) -> None:
        try:
            action()
        except (ValueError, PermissionDenied) as exc:
            self.message.setText(f"<span style='color:#c62828'>{exc}</span>")
            return
        self.message.setText(done)
        self.refresh()

    def _add(self) -> None:
        name = self.name_edit.text().strip()
        self._run(lambda: self.users.add(name, self.role_combo.currentText(), self.pin_edit.text(), by=self.admin),
                  f"Added {name}.")
        self.pin_edit.clear()

    def _set_role(self) -> None:
        u = self._selected()
        if u:
            role = self.set_role_combo.currentText()
            self._run(lambda: self.users.set_role(u["name"], role, by=self.admin), f"{u['name']} is now {role}.")

    def _toggle(self) -> None:
        u = self._selected()
        if u:
            self._run(lambda: self.users.set_active(u["name"], not u["active"], by=self.admin),
                      f"{u['name']} {'disabled' if u['active'] else 'enabled'}.")
