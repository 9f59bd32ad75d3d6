"""Out-of-range, non-finite and absurdly nested settings fall back to the default, with a warning."""

from __future__ import annotations

import json

import pytest
from conftest import run_app

from app.settings import StationSettings, load_settings, save_settings
from detector.regions import Roi

DEEP = 100_000


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("number", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_fall_back_per_field(tmp_path, number):
    """Today 1e999 in `roi` raises OverflowError in every command that reads the settings."""
    path = write(tmp_path / "station.json",
                 f'{{"station_name": "line 7", "roi": [0, 0, {number}, 10], "threshold": {number},'
                 f' "reconnect_seconds": {number}, "min_free_mb": {number}, "max_megapixels": {number},'
                 f' "rule": {{"unit": "px", "px_per_mm": {number}, "classes": {{"pit": {{"min_score": 0.3, "min_size": {number}}}}}}}}}')
    settings, warnings = load_settings(path)
    base = StationSettings()
    assert settings.station_name == "line 7"  # the good field is kept
    assert (settings.roi, settings.threshold, settings.reconnect_seconds, settings.min_free_mb, settings.max_megapixels) == (
        None, None, base.reconnect_seconds, 1000.0, base.max_megapixels)
    assert settings.rule.for_class("pit").min_score == 0.3 and settings.rule.px_per_mm is None  # the shipped rule
    text = "\n".join(warnings)
    for key in ("roi", "threshold", "reconnect_seconds", "min_free_mb", "max_megapixels", "rule"):
        assert f"'{key}'" in text, key
    assert "finite" in text


def test_text_numbers_negative_and_out_of_range_sizes_fall_back(tmp_path):
    path = write(tmp_path / "station.json", json.dumps({
        "roi": ["inf", 0, 10, 10],  # Roi.from_list alone: int(round(float("inf"))) -> OverflowError
        "reconnect_seconds": -2, "min_free_mb": -1, "max_megapixels": 0, "bit_depth": 11,
    }))
    settings, warnings = load_settings(path)
    assert settings.roi is None and settings.reconnect_seconds == 2.0 and settings.min_free_mb == 1000.0
    assert settings.max_megapixels == 100.0 and settings.bit_depth == 16
    assert len(warnings) == 5 and all("using the default" in w for w in warnings)
    write(path, json.dumps({"roi": [0, 0, -5, 10]}))
    assert load_settings(path)[0].roi is None


@pytest.mark.parametrize("text", [
    '{"roi": ' + "[" * DEEP + "]" * DEEP + "}",
    "[" * DEEP + "]" * DEEP,
    '{"rule": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}",
])
def test_deep_nesting_falls_back_to_the_defaults(tmp_path, text):
    """Today json.loads raises RecursionError out of load_settings."""
    settings, warnings = load_settings(write(tmp_path / "station.json", text))
    assert settings == load_settings(tmp_path / "absent.json")[0]
    assert len(warnings) == 1 and "using defaults" in warnings[0]


def test_moderate_nesting_falls_back_per_field_with_a_short_warning(tmp_path):
    nested = "[" * 200 + "]" * 200
    path = write(tmp_path / "station.json",
                 f'{{"station_name": "s", "roi": {nested}, "shifts": {nested}, "rule": {{"classes": {nested}}}}}')
    settings, warnings = load_settings(path)
    assert settings.station_name == "s" and settings.roi is None and settings.shifts == ()
    assert len(warnings) == 3 and all("nested too deeply" in w and len(w) < 300 for w in warnings)


def test_picture_settings_round_trip(tmp_path):
    path = tmp_path / "station.json"
    settings = StationSettings(roi=Roi(1, 2, 30, 40), max_megapixels=25.0, bit_depth=12)
    save_settings(settings, path)
    assert load_settings(path) == (settings, [])
    assert '"bit_depth": 12' in path.read_text()


BAD_FILE = ('{"roi": [0, 0, 1e999, 10], "threshold": NaN, "min_free_mb": -Infinity, '
            '"rule": {"unit": "mm", "px_per_mm": Infinity}}')


@pytest.mark.parametrize("command", [
    ["inspect", "--source", "{folder}", "--db", "{db}", "--quiet"],
    ["export-csv", "--db", "{db}", "--from", "2026-01-01", "--to", "2026-01-02", "--out", "{out}"],
    ["users", "list", "--db", "{db}"],
])
@pytest.mark.parametrize("text", [BAD_FILE, '{"roi": ' + "[" * DEEP + "]" * DEEP + "}"])
def test_commands_run_with_a_broken_settings_file(tmp_path, part_pictures, command, text):
    config = write(tmp_path / "station.json", text)
    db = tmp_path / "log.sqlite"
    if command[0] != "inspect":  # a database to read
        assert run_app("inspect", "--source", str(part_pictures[0]), "--db", str(db), "--quiet").returncode == 0
    args = [a.format(folder=part_pictures[0].parent, db=db, out=tmp_path / "out.csv") for a in command]
    r = run_app(*args, "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "OverflowError" not in r.stderr and "RecursionError" not in r.stderr
    if command[0] != "users":  # `users` does not print settings warnings
        assert "warning:" in r.stderr
