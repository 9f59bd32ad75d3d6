"""Sign-in dialog: shown at start when the station has users."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout

from app.users import AccountLocked, User, UserDirectory


class LoginDialog(QDialog):
    def __init__(self, users: UserDirectory, parent=None, message: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Sign in — inspection station")
        self.users = users
        self.user: User | None = None
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name (or scan your badge)")
        self.pin_edit = QLineEdit()
        self.pin_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.error = QLabel()
        self.error.setStyleSheet("color:#c62828;")
        form = QFormLayout()
        form.addRow("User", self.name_edit)
        form.addRow("PIN", self.pin_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.name_edit.returnPressed.connect(self.pin_edit.setFocus)
        layout = QVBoxLayout(self)
        if message:
            layout.addWidget(QLabel(message))
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def accept(self) -> None:
        try:
            user = self.users.authenticate(self.name_edit.text(), self.pin_edit.text())
        except AccountLocked as exc:
            self.error.setText(str(exc))
            self.pin_edit.clear()
            return
        if user is None:
            self.error.setText("Unknown user or wrong PIN.")
            self.pin_edit.clear()
            self.pin_edit.setFocus()
            return
        self.user = user
        super().accept()
