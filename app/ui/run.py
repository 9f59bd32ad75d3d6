"""Starts the station window (and the --screenshot tool)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path


def prepare_qt_environment() -> None:
    """Undo what importing opencv-python does to Qt's environment.

    opencv-python points QT_QPA_PLATFORM_PLUGIN_PATH (and QT_QPA_FONTDIR) at its
    bundled Qt5 plugins; PySide6 (Qt6) would then fail to load "xcb" on a real
    display. Call before the QApplication exists.
    """
    import cv2  # noqa: F401  (make sure its import-time changes have happened)

    for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        os.environ.pop(var, None)


def qt_application():
    prepare_qt_environment()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("Inspection station")
        app.setOrganizationName("metal-inspection-station")
    return app


def run_station(args: argparse.Namespace) -> int:
    from app.settings import load_settings

    settings, warnings = load_settings(args.config)
    # Command-line values apply to this run only: the window never writes them into the settings file.
    overrides = {k: v for k, v in (("source", args.source), ("model_path", args.model), ("data_dir", args.data_dir)) if v}
    db_path = Path(args.db) if getattr(args, "db", None) else None
    app = qt_application()
    from app.ui.station_window import StationWindow

    effective = replace(settings, **overrides)
    user = sign_in(db_path or effective.db_path, screenshot=bool(args.screenshot))
    if user is None:
        return 1
    window = StationWindow(settings, args.config, warnings, user=user, overrides=overrides, db_path=db_path)
    window.resize(1280, 800)
    window.show()
    if args.screenshot:
        code = take_screenshot(app, window, args.screenshot, inspect=args.inspect)
    else:
        code = app.exec()
    shut_down(app, window)
    return code


def run_plant(args: argparse.Namespace) -> int:
    """Plant mode: the gallery, review, reports and trends of every station from the plant database (no camera).

    Whoever may log in to the database is signed in: the login's role decides what they may do (app.store.postgres).
    """
    from app.settings import load_settings
    from app.store import StoreError

    settings, _ = load_settings(args.config)
    app = qt_application()
    from PySide6.QtWidgets import QMessageBox

    from app.store.postgres import open_plant
    from app.ui.plant_window import PlantWindow

    try:
        log = open_plant(args.plant, settings)
    except (StoreError, ValueError) as exc:
        if args.screenshot:
            print(f"error: {exc}", file=sys.stderr)
        else:
            QMessageBox.critical(None, "Plant database", str(exc))
        return 2
    try:
        window = PlantWindow(log, log.whoami(), shifts=settings.shifts)
        window.resize(1280, 800)
        window.show()
        if args.screenshot:
            wait_until(app, lambda: False, 0.5)
            out = Path(args.screenshot)
            out.parent.mkdir(parents=True, exist_ok=True)
            code = 0 if window.grab().save(str(out)) else 1
            print(f"screenshot: {out}" if code == 0 else f"error: could not write {out}", file=sys.stdout if code == 0 else sys.stderr)
            window.close()
        else:
            code = app.exec()
        shut_down(app, window)
    finally:
        log.close()
    return code


def shut_down(app, window) -> None:
    """Tear the window down while Python and Qt are both fully alive.

    Left to interpreter exit, Qt objects (the window, pyqtgraph's plots, file
    dialogs) are destroyed in whatever order the garbage collector picks while
    worker threads may still run; that is where "Fatal Python error:
    none_dealloc" came from. Close (stops the feed and waits for the inspection
    in flight), delete the widgets, let Qt process the deletions, then collect.
    """
    import gc

    if window.isVisible():
        window.close()
    window.deleteLater()
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    for widget in app.topLevelWidgets():
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    gc.collect()


def sign_in(db_path: Path, screenshot: bool = False):
    """Who uses the station: the setup user while there are no users, else whoever signs in."""
    from app.store import InspectionStore, StoreError
    from app.users import SETUP_USER, User, UserDirectory

    try:
        with InspectionStore(db_path) as store:
            users = UserDirectory(store)
            if users.is_open():
                return SETUP_USER
            if screenshot:
                # The documentation tool may only inspect, then it exits.
                return User("screenshot", "operator")
            from app.ui.login import LoginDialog

            dialog = LoginDialog(users)
            return dialog.user if dialog.exec() == LoginDialog.DialogCode.Accepted else None
    except StoreError:
        # Users cannot be checked: run with the least rights; the window reports the broken log.
        return User("unverified", "operator")


def wait_until(app, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def take_screenshot(app, window, out: Path, inspect: bool, timeout: float = 30.0) -> int:
    """Wait for the first frame (and its inspection), save the window as `out`, close."""
    ok = wait_until(app, lambda: window.view.image() is not None, timeout)
    if not ok:
        print("error: no frame arrived from the source", file=sys.stderr)
    elif inspect:
        window.inspect_now()
        ok = wait_until(app, lambda: window.last_result is not None, timeout)
        if not ok:
            print("error: the inspection did not finish", file=sys.stderr)
    box = getattr(window, "_problem_box", None)
    if box is not None:
        box.close()
    wait_until(app, lambda: False, 0.2)  # let the last paint happen
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = window.grab().save(str(out))
    window.close()
    if not saved:
        print(f"error: could not write {out}", file=sys.stderr)
        return 1
    print(f"screenshot: {out}")
    return 0 if ok else 1
