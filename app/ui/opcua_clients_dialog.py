"""Admins decide which OPC UA client applications (PLCs, SCADA) may talk to the station (app.line.opcua.trust).

A client refused for its certificate appears here; trusting it counts at its next sign-in, and every change
lands in the audit trail.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.station import StationError
from app.store import StoreError
from app.users import PermissionDenied, User

COLUMNS = ("application", "status", "valid until", "application URI", "SHA-256")  # the long one last


class OpcUaClientsDialog(QDialog):
    def __init__(self, station, admin: User, parent=None):
        super().__init__(parent)
        self.setWindowTitle("OPC UA client certificates")
        self.station = station
        self.admin = admin
        self.entries = []
        intro = QLabel("Client applications (a PLC, a SCADA) sign in over the encrypted endpoint only with a "
                       "certificate trusted here, and then with a user's name and PIN. A refused client's certificate "
                       f"is listed here after its first try. Folder: {station.opcua_folder / 'pki'}")
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.trust_button = QPushButton("Trust selected")
        self.trust_button.clicked.connect(lambda: self._set(True))
        self.distrust_button = QPushButton("Stop trusting selected")
        self.distrust_button.clicked.connect(lambda: self._set(False))
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        row = QHBoxLayout()
        for button in (self.trust_button, self.distrust_button, self.refresh_button):
            row.addWidget(button)
        self.message = QLabel()
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table)
        layout.addLayout(row)
        layout.addWidget(self.message)
        self.resize(860, 360)
        self.refresh()

    def refresh(self) -> None:
        self.entries = self.station.opcua_clients()
        self.table.setRowCount(len(self.entries))
        for i, c in enumerate(self.entries):
            status = "trusted" if c.trusted else "refused"
            if c.expired:
                status += " (expired)"
            for col, text in enumerate((c.name, status, f"{c.not_after:%Y-%m-%d}", c.application_uri, c.fingerprint)):
                self.table.setItem(i, col, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        if not self.entries:
            self.message.setText("No client has tried to connect yet, and none is trusted.")

    def _set(self, trusted: bool) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if len(rows) != 1:
            self.message.setText("Select one certificate first.")
            return
        entry = self.entries[rows.pop()]
        try:
            done = self.station.set_opcua_client_trusted(entry.fingerprint, trusted, self.admin)
        except (KeyError, OSError, PermissionDenied, StationError, StoreError) as exc:
            self.message.setText(f"<span style='color:#c62828'>{exc}</span>")
            self.refresh()
            return
        self.refresh()
        self.message.setText(f"{done.name} is {'now trusted' if trusted else 'no longer trusted'}"
                             " (from its next sign-in).")
