"""Pictures are judged only when they are what they claim: shapes, header bombs, damaged data, bit depth, sources."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
from conftest import REPO, run_app

from app.sources import FAILED, LIVE, NOT_FOUND, ImageFilesSource, LiveFeed, SourceError, open_source
from detector import Detector
from detector.images import load_grey, range_warning, read_header, read_picture, to_uint8
from synthetic import camera_frame, jpeg_with_size, png_bomb, png_with_chunk, write_part_pictures


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(device="cpu")


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def jpeg_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def corrupt_jpeg() -> bytes:
    """A part's JPEG with one damaged byte: libjpeg says "Corrupt JPEG data: N extraneous bytes before marker 0xd9"."""
    data = bytearray(jpeg_bytes(camera_frame(True, 0)[:, :, 0]))
    data[len(data) // 2] ^= 0x55
    return bytes(data)


# -- extreme shapes --------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h"), [(1, 600), (600, 1), (5000, 1), (1, 5000), (5000, 10), (7, 7)])
def test_extreme_shapes_are_refused_clearly(detector, tmp_path, w, h):
    """Today 5000x1 raises cv2.error from the letterbox; a strip a pixel high is no picture to judge."""
    image = np.full((h, w), 128, np.uint8)
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), image)
    for picture in (image, path):
        with pytest.raises(ValueError, match=rf"{w}x{h} px"):
            detector.detect(picture)


def test_elongated_but_inspectable_pictures_are_judged(detector):
    scratch = camera_frame(True, seed=0)
    strip = np.ascontiguousarray(scratch[100:140])  # 320x40: 8:1
    assert isinstance(detector.detect(strip), list)


# -- header bombs ------------------------------------------------------------------------


def test_header_bombs_are_refused_before_decoding(tmp_path):
    png = tmp_path / "bomb.png"
    png.write_bytes(png_bomb(20000, 20000, rows=5000))
    jpeg = tmp_path / "bomb.jpg"
    jpeg.write_bytes(jpeg_with_size(jpeg_bytes(camera_frame(True, 0)), 65000, 65000))
    assert png.stat().st_size < 150_000
    for path, size in ((png, "20000x20000"), (jpeg, "65000x65000")):
        with pytest.raises(ValueError, match=rf"{size} .* over the limit of 100 megapixels"):
            load_grey(path)
    # In a fresh interpreter: refusing them costs no more memory than importing the code.
    code = ("import sys; from detector.images import load_grey\n"
            f"for p in {[str(png), str(jpeg)]!r}:\n"
            "    try: load_grey(p)\n    except ValueError: pass\n"
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < 200 * 1024  # kB: today 850 MB for the PNG, a cv2.error for the JPEG


def test_the_pixel_limit_is_a_parameter_and_a_source_setting(tmp_path):
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), camera_frame(True, 0))  # 320x240 = 0.077 MP
    assert load_grey(path, max_megapixels=0.08).shape == (240, 320)
    with pytest.raises(ValueError, match="over the limit of 0.05 megapixels"):
        load_grey(path, max_megapixels=0.05)
    source = open_source(str(tmp_path), max_megapixels=0.05)
    assert list(source.frames()) == [] and "over the limit" in source.skipped[0]


def test_headers_of_every_accepted_format_are_read_without_decoding(tmp_path):
    grey = camera_frame(True, 0)[:, :, 0]
    for suffix, fmt in ((".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".tif", "tiff"), (".webp", "webp"),
                        (".pgm", "pnm"), (".ppm", "pnm")):
        image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR) if suffix == ".ppm" else grey
        data = cv2.imencode(suffix, image)[1].tobytes()
        header = read_header(data)
        assert (header.format, header.width, header.height) == (fmt, 320, 240), suffix
        path = tmp_path / f"p{suffix}"
        path.write_bytes(data)
        assert load_grey(path).shape == (240, 320)
    with pytest.raises(ValueError, match="not a PNG, JPEG"):
        read_header(b"GIF89a" + bytes(100))


# -- damaged data ------------------------------------------------------------------------


def test_jpeg_with_corrupt_data_is_refused_though_opencv_decodes_it(tmp_path):
    data = corrupt_jpeg()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV only prints it
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="JPEG data is damaged.*libjpeg"):
        load_grey(path)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg_bytes(camera_frame(True, 0))[:-100])
    with pytest.raises(ValueError, match="cannot decode"):
        load_grey(cut)


def test_complete_pictures_followed_by_extra_bytes_are_accepted(tmp_path):
    """Today a JPEG with bytes after its end marker is called truncated."""
    grey = camera_frame(True, 0)[:, :, 0]
    for suffix, data in ((".jpg", jpeg_bytes(grey)), (".png", png_bytes(grey))):
        clean, padded = tmp_path / f"clean{suffix}", tmp_path / f"padded{suffix}"
        clean.write_bytes(data)
        padded.write_bytes(data + b"\x00trailer from the camera" * 50)
        assert np.array_equal(load_grey(padded), load_grey(clean))


def test_damaged_png_is_refused(tmp_path):
    grey = camera_frame(True, 0)[:, :, 0]
    data = png_bytes(grey)
    idat = data.index(b"IDAT") - 4
    (length,) = struct.unpack_from(">I", data, idat)
    cases = {}
    bad_text = bytearray(png_with_chunk(data, b"tEXt", b"Comment\x00hello"))
    bad_text[33 + 8] ^= 1  # an ancillary chunk's CRC no longer matches: libpng ignores that
    cases["ancillary CRC"] = bytes(bad_text)
    flipped = bytearray(data)
    flipped[idat + 8 + length // 2] ^= 0x10
    cases["IDAT CRC"] = bytes(flipped)
    fixed = bytearray(flipped)  # the same damage behind a recomputed CRC
    fixed[idat + 8 + length:idat + 12 + length] = struct.pack(">I", zlib.crc32(bytes(fixed[idat + 4:idat + 8 + length])))
    cases["IDAT data"] = bytes(fixed)
    narrower = bytearray(data)  # IHDR says 319 px wide, CRC fixed: libpng decodes shifted rows without a word
    struct.pack_into(">I", narrower, 16, 319)
    narrower[29:33] = struct.pack(">I", zlib.crc32(bytes(narrower[12:29])))
    cases["IHDR width"] = bytes(narrower)
    cases["truncated"] = data[:len(data) * 2 // 3]
    cases["no IEND"] = data[:-12]
    for name, damaged in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.png"
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match="cannot decode") as info:
            load_grey(path)
        assert "PNG" in str(info.value), name


# -- bit depth ---------------------------------------------------------------------------


def twelve_bit(grey: np.ndarray) -> np.ndarray:
    """A 12-bit camera's samples of the same picture (LSB-aligned in uint16)."""
    return np.round(grey.astype(np.float64) * 4095 / 255).astype(np.uint16)


def test_12_bit_frames_in_16_bit_png_inspect_like_the_8_bit_picture(detector, scratch_image, tmp_path):
    """Today such a frame is scaled by 255/65535: near-black, no defects, PASS."""
    grey, _ = scratch_image
    reference = detector.detect(grey, threshold=0.1)
    assert reference and reference[0].score > 0.5
    data = png_bytes(twelve_bit(grey))
    with_sbit = tmp_path / "sbit12.png"
    with_sbit.write_bytes(png_with_chunk(data, b"sBIT", bytes([12])))
    assert np.array_equal(load_grey(with_sbit), grey)
    assert detector.detect(with_sbit, threshold=0.1) == reference
    picture, info = read_picture(with_sbit)
    assert (info.sample_bits, info.bits_used, info.warnings) == (16, 12, ())

    plain = tmp_path / "plain12.png"  # no sBIT: the source's bit_depth setting says it
    plain.write_bytes(data)
    assert np.array_equal(load_grey(plain, bit_depth=12), grey)
    assert detector.detect(plain, threshold=0.1) != reference  # read as 16-bit data it is another picture...
    picture, info = read_picture(plain)  # ...nearly black, and said so
    assert picture.max() < 16 and "under 1/16 of its 16-bit range" in info.warnings[0] and "bit_depth" in info.warnings[0]
    source = open_source(str(plain), bit_depth=12)
    source.open()
    assert np.array_equal(source.read(), grey) and source.frame_warnings == ()


def test_sbit_with_full_scale_samples_is_scaled_as_full_scale(scratch_image, tmp_path):
    """PNG asks for samples scaled to the full range; sBIT then only says how many bits mattered."""
    grey, _ = scratch_image
    full = twelve_bit(grey) << 4  # 12 significant bits, left-aligned
    path = tmp_path / "full.png"
    path.write_bytes(png_with_chunk(png_bytes(full), b"sBIT", bytes([12])))
    assert np.abs(load_grey(path).astype(int) - grey).max() <= 1
    assert read_picture(path)[1].bits_used == 16


def test_range_warning_and_to_uint8():
    dark = np.full((20, 20), 4000, np.uint16)
    assert "under 1/16 of its 16-bit range" in range_warning(dark)
    assert range_warning(dark, 12) is None
    assert "lighting" in range_warning(np.full((20, 20), 10, np.uint8))
    assert range_warning(np.full((20, 20), 100, np.uint8)) is None
    assert to_uint8(np.array([[4095, 0]], np.uint16), 12).tolist() == [[255, 0]]
    assert to_uint8(np.array([[65535, 4095]], np.uint16), 12).tolist() == [[255, 16]]  # above 4095: full-scale after all
    with pytest.raises(ValueError, match="bit_depth"):
        to_uint8(dark, 11)


# -- sources -----------------------------------------------------------------------------


def test_a_corrupt_single_file_fails_once(tmp_path):
    bad = tmp_path / "part.jpg"
    bad.write_bytes(jpeg_bytes(camera_frame(True, 0))[:3000])
    feed = LiveFeed(open_source(str(bad)), reconnect_seconds=0.05).start()
    try:
        wait_for(lambda: feed.state == FAILED)
        time.sleep(0.3)
        assert feed.state == FAILED and "part.jpg" in feed.error and feed.latest() is None
        assert not feed._thread.is_alive()  # no endless reconnecting
    finally:
        feed.stop()


def test_a_camera_that_never_opened_says_so():
    feed = LiveFeed(open_source("5"), reconnect_seconds=0.2).start()
    try:
        wait_for(lambda: feed.state == NOT_FOUND)
        assert feed.state == NOT_FOUND and feed.error == "cannot open camera 5" and not feed.ever_connected
    finally:
        feed.stop()


def test_picture_folder_steps_count_skip_and_say_when_they_wrap(tmp_path):
    folder = tmp_path / "parts"
    write_part_pictures(folder, n=3)
    (folder / "part_001_zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")  # sorts between 001 and 002
    feed = LiveFeed(open_source(str(folder))).start()
    try:
        wait_for(lambda: feed.latest() is not None)
        assert feed.is_pictures and feed.state == LIVE and feed.fps() == 0.0
        seen = [feed.latest()]
        for delta in (1, 1, 1, -1):
            feed.step(delta)
            wait_for(lambda: feed.latest().seq > seen[-1].seq, 5)
            seen.append(feed.latest())
        assert [f.label for f in seen] == ["part_000_scratch.png", "part_001_clean.png", "part_002_scratch.png",
                                           "part_000_scratch.png", "part_002_scratch.png"]
        assert [f.position for f in seen] == [(1, 4), (2, 4), (4, 4), (1, 4), (4, 4)]
        assert [f.wrapped for f in seen] == [False, False, False, True, True]
        assert feed.at_end
        assert len(feed.skipped_files) == 1 and feed.skipped_files[0].startswith("part_001_zz_corrupt.jpg: ")
    finally:
        feed.stop()


def test_every_step_publishes_a_new_frame_even_on_one_picture(tmp_path):
    (path,) = write_part_pictures(tmp_path / "one", n=1)
    feed = LiveFeed(ImageFilesSource(path)).start()
    try:
        wait_for(lambda: feed.latest() is not None)
        first = feed.latest()
        feed.step(1)
        wait_for(lambda: feed.latest().seq > first.seq)
        assert feed.latest().seq == first.seq + 1 and feed.latest().wrapped
    finally:
        feed.stop()


def test_open_source_refuses_a_bad_bit_depth(tmp_path):
    with pytest.raises(SourceError, match="bit depth"):
        open_source(str(tmp_path), bit_depth=11)


# -- headless inspect ----------------------------------------------------------------------


def test_headless_inspect_skips_what_it_cannot_judge_and_goes_on(tmp_path):
    """Today the 5000x1 picture aborts the run with a cv2.error traceback."""
    folder = tmp_path / "line"
    write_part_pictures(folder, n=2)
    cv2.imwrite(str(folder / "part_000a_strip.png"), np.full((1, 5000), 128, np.uint8))
    (folder / "part_000b_bomb.png").write_bytes(png_bomb())
    (folder / "part_000c_damaged.jpg").write_bytes(corrupt_jpeg())
    db = tmp_path / "log.sqlite"
    r = run_app("inspect", "--source", str(folder), "--db", str(db))
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stdout + r.stderr  # some pictures were not judged
    assert "inspected 2: 1 PASS, 1 FAIL, 3 not inspected" in r.stdout
    for name in ("part_000a_strip.png", "part_000b_bomb.png", "part_000c_damaged.jpg"):
        assert name in r.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 2

    clean = run_app("inspect", "--source", str(tmp_path / "clean"), "--db", str(db))  # missing folder: set-up error
    assert clean.returncode == 2 and "Traceback" not in clean.stderr


def test_headless_region_outside_the_first_frame_is_refused_before_the_run(tmp_path):
    folder = tmp_path / "line"
    write_part_pictures(folder, n=2)
    db = tmp_path / "log.sqlite"
    r = run_app("inspect", "--source", str(folder), "--db", str(db), "--roi", "400,300,50,50")
    assert r.returncode == 2 and "outside the first frame (320x240" in r.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 0
    r = run_app("inspect", "--source", str(folder), "--db", str(db), "--roi", "inf,0,10,10")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "finite" in r.stderr
    r = run_app("inspect", "--source", str(folder), "--db", str(db), "--roi", "0,0,320,240", "--quiet")
    assert r.returncode == 0 and "inspected 2: 1 PASS, 1 FAIL" in r.stdout
