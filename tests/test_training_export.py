"""Training-set export reports what it did: exported, skipped and why, and why nothing (no Qt)."""

from __future__ import annotations

import json

import pytest
from test_reports import reviewer
from test_review import log

from app.cli import main as cli_main
from app.review import ReviewService
from app.store import GalleryFilter, InspectionStore
from app.training_export import export_reviewed
from app.verdict import FAIL, PASS
from detector import Detection


@pytest.fixture
def store(tmp_path):
    s = InspectionStore(tmp_path / "data" / "inspections.sqlite")
    log(s, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90))])  # 2026-11-02 08:00 UTC
    log(s, 1, PASS, [])
    log(s, 30, PASS, [])  # 2026-11-03 14:00 UTC
    yield s
    s.close()


def export_cli(store, out, *args) -> list[str]:
    return ["export-training-set", "--db", str(store.db_path), "--out", str(out), *args]


def test_nothing_reviewed_says_why_and_fails(store, tmp_path, capsys):
    result = export_reviewed(store, tmp_path / "out")
    assert result.exported == 0 and result.reviewed == 0 and result.matching == 3
    assert result.lines() == ["nothing exported: no reviewed inspections in this filter (3 inspections match it): "
                              "review some first"]
    assert cli_main(export_cli(store, tmp_path / "cli")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error: nothing exported: no reviewed inspections in this filter" in err and "review some first" in err


def test_exported_and_skipped_inspections_are_listed(store, tmp_path, capsys):
    qa = ReviewService(store, reviewer(store))
    first, second, _ = store.gallery_ids(GalleryFilter())
    qa.set_verdict(first, FAIL, "scratch")
    qa.set_verdict(second, PASS, "clean")
    store.resolve(store.inspection(second).image_path).unlink()  # its frame is gone

    assert cli_main(export_cli(store, tmp_path / "cli")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("exported 1 reviewed pictures with 1 boxes (scratch) to ")
    assert out[1:] == ["1 of 2 reviewed inspections exported, 1 skipped:", f"  skipped #{second}: frame missing"]
    assert json.loads((tmp_path / "cli" / "export.json").read_text())["images"] == 1

    # Only the frameless one in the filter: all reviewed ones skipped, each with the reason.
    result = export_reviewed(store, tmp_path / "x", GalleryFilter(part_id="SN-001"))
    assert result.lines() == ["nothing exported: all 1 reviewed inspections in this filter were skipped",
                              "0 of 1 reviewed inspections exported, 1 skipped:", f"  skipped #{second}: frame missing"]
    # A range with inspections but no reviewed one: the CLI's dates are the filter.
    assert cli_main(export_cli(store, tmp_path / "cli3", "--from", "2026-11-03", "--to", "2026-11-03")) == 1
    assert "no reviewed inspections in this filter (1 inspections match it)" in capsys.readouterr().err
