"""Reading and checking input pictures; everything becomes grey uint8.

The model is trained on grey steel pictures, so colour input is converted to
grey the same way for every source (file, camera, array) before detection.

A picture file is judged only when it is what it claims to be:
- its header is parsed here, without a decoder, and a picture declaring more
  than `max_megapixels` is refused before anything is decoded (a 100 KB PNG can
  declare 20000x20000 pixels and make a decoder allocate gigabytes);
- JPEG data is decoded by libjpeg-turbo in strict mode (simplejpeg), so any
  libjpeg warning (corrupt data, premature end, extraneous bytes) refuses the
  file; OpenCV would only print it and hand back a half-grey picture;
- every PNG chunk's CRC is checked, the IHDR matches the image data's size,
  and the decoded size must match the header's for every format.
Bytes after a complete picture (after JPEG's EOI, PNG's IEND) are allowed.

16-bit samples become 8 bit through their significant bits: a 12-bit camera's
frame in a 16-bit file holds 0..4095 and is scaled by 255/4095, not 255/65535
(see `to_uint8`). The number of bits comes from the file (PNG sBIT, PGM/PPM
maxval) or else from the caller's `bit_depth` (a station setting per source).
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# The picture files the project reads, one list for the station's sources and data import: the
# formats whose header `read_header` checks before anything is decoded.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

DEFAULT_MAX_MEGAPIXELS = 100.0
BIT_DEPTHS = (8, 10, 12, 14, 16)  # significant bits of 16-bit samples a source may declare
MIN_SIDE = 8  # px: a narrower picture cannot hold a defect the model could find
FORMATS = "PNG, JPEG, BMP, TIFF, WebP, PGM/PPM"


@dataclass(frozen=True)
class PictureHeader:
    """What a picture file declares, read without decoding it."""

    format: str  # "png", "jpeg", "bmp", "tiff", "webp", "pnm"
    width: int
    height: int
    significant_bits: int | None = None  # from PNG sBIT or a PGM/PPM maxval; None: the file does not say

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


@dataclass(frozen=True)
class PictureInfo:
    """How a picture file was read: returned by `read_picture` beside the pixels."""

    format: str
    width: int
    height: int
    sample_bits: int  # as stored: 8 or 16
    bits_used: int  # the significant bits that were scaled to 8 bit (8 for 8-bit files)
    warnings: tuple[str, ...] = ()  # for the operator and the log, e.g. a nearly black picture


# -- headers --------------------------------------------------------------------------------


def read_header(data: bytes) -> PictureHeader:
    """Parse a picture's header (format, size, sample bits); ValueError if it is unknown or malformed."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_header(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(b"BM"):
        return _bmp_header(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_header(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data)
    if data[:2] in (b"P2", b"P3", b"P5", b"P6"):
        return _pnm_header(data)
    if data[:4] in (b"II+\x00", b"MM\x00+"):
        raise ValueError("BigTIFF pictures are not supported (their size cannot be checked before decoding)")
    raise ValueError(f"not a {FORMATS} picture")


def _png_header(data: bytes) -> PictureHeader:
    """IHDR, sBIT, and every chunk's CRC up to IEND (cv2 ignores damaged ancillary chunks)."""
    view = memoryview(data)
    pos, ihdr, sbit, idat = 8, None, None, 0
    while True:
        if pos + 12 > len(data):
            raise ValueError("PNG data ends before its IEND chunk (truncated)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise ValueError(f"PNG chunk {kind!r} runs past the end of the file (truncated or damaged)")
        body = view[pos + 8:end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ValueError(f"PNG chunk {kind!r} is damaged (CRC mismatch)")
        if ihdr is None:
            if kind != b"IHDR" or length != 13:
                raise ValueError("PNG does not start with an IHDR chunk")
            ihdr = struct.unpack_from(">IIBBBBB", data, pos + 8)
        elif kind == b"sBIT":
            sbit = bytes(body)
        elif kind == b"IDAT":
            idat += length
        elif kind == b"IEND":
            break
        pos = end
    width, height, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16) or width == 0 or height == 0:
        raise ValueError(f"PNG header is malformed ({width}x{height}, {depth}-bit, colour type {colour})")
    if idat == 0:
        raise ValueError("PNG has no image data (IDAT)")
    significant = None
    if sbit and depth == 16 and colour != 3:
        colour_bits = max(sbit[:3] if channels >= 3 else sbit[:1])
        significant = colour_bits if 1 <= colour_bits <= 16 else None
    return PictureHeader("png", width, height, significant)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> PictureHeader:
    """The frame header (SOFn): walk the marker segments up to it."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos} (damaged header)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break  # EOI or a scan before any frame header
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF:
            if pos + 10 > len(data) or length < 8:
                raise ValueError("JPEG frame header is truncated")
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            if width == 0 or height == 0:
                raise ValueError(f"JPEG frame header declares {width}x{height} pixels (a later DNL height is not supported)")
            if precision != 8:
                raise ValueError(f"{precision}-bit JPEG is not supported (8-bit only)")
            return PictureHeader("jpeg", width, height)
        if length < 2:
            raise ValueError(f"JPEG segment at byte {pos} has a bad length")
        pos += 2 + length
    raise ValueError("JPEG has no frame header (SOF) before its data (truncated or damaged)")


def _bmp_header(data: bytes) -> PictureHeader:
    if len(data) < 30:
        raise ValueError("BMP header is truncated")
    offset, dib = struct.unpack_from("<II", data, 10)
    if dib == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
        compression = 0
    elif dib >= 40 and len(data) >= 34:
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
        height = abs(height)  # negative: stored top-down
    else:
        raise ValueError("BMP header is malformed")
    if width <= 0 or height <= 0:
        raise ValueError(f"BMP header declares {width}x{height} pixels")
    if compression in (0, 3) and bits in (1, 4, 8, 16, 24, 32):  # uncompressed: the size is known
        if len(data) < offset + (width * bits + 31) // 32 * 4 * height:
            raise ValueError("BMP pixel data is truncated")
    return PictureHeader("bmp", width, height)


def _tiff_header(data: bytes) -> PictureHeader:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        tags = {}
        for i in range(count):
            tag, kind, n, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * i)
            if tag in (256, 257) and kind in (3, 4):
                tags[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0]
    except struct.error:
        raise ValueError("TIFF header is truncated") from None
    width, height = tags.get(256, 0), tags.get(257, 0)
    if width <= 0 or height <= 0:
        raise ValueError("TIFF header does not declare the picture's size")
    return PictureHeader("tiff", width, height)


def _webp_header(data: bytes) -> PictureHeader:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if 8 + riff_size > len(data) or len(data) < 30:
        raise ValueError("WebP data is truncated")
    kind, payload = data[12:16], 20
    if kind == b"VP8 " and data[payload + 3:payload + 6] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, payload + 6))
    elif kind == b"VP8L" and data[payload] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, payload + 1)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":
        width = int.from_bytes(data[payload + 4:payload + 7], "little") + 1
        height = int.from_bytes(data[payload + 7:payload + 10], "little") + 1
    else:
        raise ValueError("WebP header is malformed")
    return PictureHeader("webp", width, height)


def _pnm_header(data: bytes) -> PictureHeader:
    """PGM/PPM: magic, width, height, maxval, separated by whitespace and # comments."""
    fields, pos = [], 2
    while len(fields) < 3:
        while pos < len(data) and (data[pos:pos + 1].isspace() or data[pos] == ord("#")):
            if data[pos] == ord("#"):
                pos = data.find(b"\n", pos)
                pos = len(data) if pos < 0 else pos
            pos += 1
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit():
            pos += 1
        if start == pos or pos - start > 9:
            raise ValueError("PGM/PPM header is malformed or truncated")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if width == 0 or height == 0 or not 0 < maxval < 65536:
        raise ValueError(f"PGM/PPM header declares {width}x{height} pixels, maxval {maxval}")
    wide = maxval > 255
    if data[:2] in (b"P5", b"P6"):  # binary: the size of the pixel data is known
        channels = 1 if data[:2] == b"P5" else 3
        if len(data) < pos + 1 + width * height * channels * (2 if wide else 1):
            raise ValueError("PGM/PPM pixel data is truncated")
    return PictureHeader("pnm", width, height, maxval.bit_length() if wide else None)


# -- decoding -------------------------------------------------------------------------------


def _decode_jpeg(data: bytes) -> np.ndarray:
    """libjpeg-turbo in strict mode: every libjpeg warning about the data is an error."""
    import simplejpeg

    try:
        colourspace = simplejpeg.decode_jpeg_header(data)[2]
        if colourspace == "Gray":
            image = simplejpeg.decode_jpeg(data, colorspace="GRAY")
            return image.reshape(image.shape[:2])
        if colourspace in ("CMYK", "YCCK"):  # checked by libjpeg, converted by OpenCV
            simplejpeg.decode_jpeg(data, colorspace="CMYK")
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return simplejpeg.decode_jpeg(data, colorspace="BGR")
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"JPEG data is damaged or truncated (libjpeg: {exc})") from None


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_data(data: bytes) -> None:
    """The image data inflates completely (zlib's Adler-32 included) to exactly the size IHDR implies.

    libpng, as OpenCV drives it, stops once it has every row: it decodes a
    picture with a wrong width or damaged data behind a fixed-up CRC without a
    word. Inflated in 1 MB pieces, so memory stays small. Chunks are known good
    (`_png_header` walked them).
    """
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    bits = depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        cols, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        expected += rows * (1 + (cols * bits + 7) // 8) if cols else 0
    inflate, total, pos, view = zlib.decompressobj(), 0, 8, memoryview(data)
    try:
        while True:
            length, kind = struct.unpack_from(">I4s", data, pos)
            if kind == b"IEND":
                break
            if kind == b"IDAT":
                piece = view[pos + 8:pos + 8 + length]
                while piece and not inflate.eof:
                    total += len(inflate.decompress(piece, 1 << 20))
                    if total > expected:
                        raise ValueError(f"PNG image data holds more than its {width}x{height} header says (damaged)")
                    piece = inflate.unconsumed_tail
            pos += 12 + length
    except zlib.error as exc:
        raise ValueError(f"PNG image data is damaged ({exc})") from None
    if not inflate.eof or total != expected:
        raise ValueError(f"PNG image data is incomplete for its {width}x{height} header (damaged or truncated)")


def _decode(data: bytes, header: PictureHeader) -> np.ndarray:
    if header.format == "jpeg":
        image = _decode_jpeg(data)
    else:
        if header.format == "png":
            _check_png_data(data)
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise ValueError(f"{header.format.upper()} data cannot be decoded ({str(exc).strip().splitlines()[-1]})") from None
        if image is None:
            raise ValueError(f"{header.format.upper()} data is damaged or truncated")
    if image.shape[:2] != (header.height, header.width):
        raise ValueError(f"decoded {image.shape[1]}x{image.shape[0]} pixels where the header declares "
                         f"{header.width}x{header.height} (damaged file)")
    return image


def _read(path: str | Path, max_megapixels: float) -> tuple[np.ndarray, PictureHeader]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file: {path}")
    if not max_megapixels > 0:
        raise ValueError(f"max_megapixels must be > 0, got {max_megapixels}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"image file is empty: {path}")
    # Larger than any picture within the limit could be (8 bytes a pixel: 16-bit RGBA, uncompressed).
    if size > max_megapixels * 8e6 + (1 << 24):
        raise ValueError(f"image file {path} is {size / 1e6:.0f} MB, too large for a picture of at most "
                         f"{max_megapixels:g} megapixels")
    data = path.read_bytes()
    try:
        header = read_header(data)
    except ValueError as exc:
        raise ValueError(f"cannot decode image file {path}: {exc}") from None
    if header.megapixels > max_megapixels:
        raise ValueError(f"picture {path} is {header.width}x{header.height} ({header.megapixels:.1f} megapixels), "
                         f"over the limit of {max_megapixels:g} megapixels (max_megapixels); refused before decoding")
    try:
        return _decode(data, header), header
    except ValueError as exc:
        raise ValueError(f"cannot decode image file {path}: {exc}") from None


def read_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Decode a checked picture file as stored (grey, BGR or BGRA; uint8 or uint16)."""
    return _read(path, max_megapixels)[0]


def read_picture(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 bit_depth: int = 16) -> tuple[np.ndarray, PictureInfo]:
    """A checked picture file as uint8 (grey, BGR or BGRA as stored), and how it was read.

    16-bit samples are scaled by their significant bits: the file's (PNG sBIT,
    PGM/PPM maxval) where it says, else `bit_depth`. `PictureInfo.warnings`
    says when the picture uses under 1/16 of its range (see `range_warning`).
    Raises FileNotFoundError, or ValueError naming the problem; never judge a
    picture that raised.
    """
    image, header = _read(path, max_megapixels)
    bits = header.significant_bits or bit_depth
    picture, used = _to_uint8(image, bits)
    warning = range_warning(image, used)
    info = PictureInfo(header.format, header.width, header.height, image.dtype.itemsize * 8, used,
                       (warning,) if warning else ())
    return picture, info


# -- samples and shapes ---------------------------------------------------------------------


def _check_bit_depth(bit_depth: int) -> int:
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {', '.join(map(str, BIT_DEPTHS))}, got {bit_depth!r}")
    return bit_depth


def _to_uint8(image: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """`to_uint8` and the significant bits it used (16 when the data turned out full-scale)."""
    if image.dtype != np.uint16:
        return image, 8
    bits = max(1, min(16, int(bits)))
    top = (1 << bits) - 1
    if bits < 16:
        # N significant bits may be stored LSB-aligned (0..2^N-1, what cameras and most
        # writers do) or, as the PNG spec asks for sBIT, scaled to the full 16-bit range.
        # A value above 2^N-1, or low bits that are all zero, proves the full-scale case.
        peak = int(image.max())
        if peak > top or (peak > 0 and not (image & ((1 << (16 - bits)) - 1)).any()):
            bits, top = 16, 65535
    return _lut(top)[image], bits


@functools.lru_cache(maxsize=8)
def _lut(top: int) -> np.ndarray:
    """uint16 -> uint8 for samples whose full scale is `top`, rounded, clipped at 255."""
    return np.minimum(np.arange(65536, dtype=np.float32) * (255.0 / top) + 0.5, 255).astype(np.uint8)


def to_uint8(image: np.ndarray, bit_depth: int = 16) -> np.ndarray:
    """8-bit samples of an image; uint16 ones scaled by 255/(2^N-1) for N = `bit_depth` significant bits.

    Samples above 2^N-1 (or whose low 16-N bits are all zero) show the data is
    full-scale after all and are scaled by 255/65535; uint8 images pass through.
    """
    return _to_uint8(image, _check_bit_depth(bit_depth))[0]


def range_warning(image: np.ndarray, bit_depth: int | None = None) -> str | None:
    """A warning when the picture uses under 1/16 of its range (its brightest pixel), else None.

    `bit_depth`: significant bits of uint16 samples (default 16); uint8 images
    have 8. A 12-bit camera's frame read as 16-bit data is the typical case:
    it is nearly black and would pass every part.
    """
    if image.size == 0:
        return None
    bits = 8 if image.dtype == np.uint8 else (bit_depth or 16)
    top = (1 << bits) - 1
    peak = int(image.max())
    if peak * 16 > top:
        return None
    hint = ("if the camera delivers fewer significant bits, set the source's bit depth (bit_depth)" if bits > 8
            else "check the lighting and the exposure")
    return f"picture uses under 1/16 of its {bits}-bit range (brightest pixel {peak} of {top}), it is nearly black: {hint}"


def to_grey_uint8(image: np.ndarray, bit_depth: int = 16) -> np.ndarray:
    """Check an array and convert it to a contiguous HxW uint8 grey picture.

    `bit_depth`: significant bits of uint16 samples (see `to_uint8`).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array or a file path, not {type(image).__name__}")
    if image.size == 0 or 0 in image.shape:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype.kind == "f":
        if np.isnan(image).any():
            raise ValueError("image contains NaN values")
        raise ValueError(f"image dtype {image.dtype} is not supported; use uint8 or uint16")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image dtype {image.dtype} is not supported; use uint8 or uint16")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"image has {channels} channels; expected 1 (grey), 3 (BGR) or 4 (BGRA)")
    elif image.ndim != 2:
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"picture is {w}x{h} px; each side must be at least {MIN_SIDE} px to be inspected")
    return np.ascontiguousarray(to_uint8(image, bit_depth))


def load_grey(image: np.ndarray | str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
              bit_depth: int = 16) -> np.ndarray:
    """Any accepted input (array or file path) as HxW grey uint8.

    Files: checked and read by `read_picture` (limit `max_megapixels`); 16-bit
    samples are scaled by their significant bits (the file's, else `bit_depth`).
    """
    if isinstance(image, (str, Path)):
        image = read_picture(image, max_megapixels, bit_depth)[0]
    return to_grey_uint8(image, bit_depth)


def letterbox(grey: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, float, float]:
    """Resize keeping the aspect ratio so the long side is `size`, pad bottom/right.

    Returns the padded picture and the x/y scale factors (new / old), computed
    exactly as MMDetection's `Resize(keep_ratio=True)` does so both backends
    map boxes back identically. A picture so elongated that its short side
    would shrink below `MIN_SIDE` px is refused: a strip a few pixels high
    against the padding is not a picture the model can judge.
    """
    h, w = grey.shape[:2]
    scale = min(size / max(h, w), size / min(h, w))
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    if min(new_w, new_h) < MIN_SIDE:
        raise ValueError(f"picture is {w}x{h} px: too elongated to inspect (its short side would be "
                         f"{min(new_w, new_h)} px at the model's {size} px input; at most "
                         f"{size // MIN_SIDE}:1); inspect a region of it")
    resized = cv2.resize(grey, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size), pad_value, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, new_w / w, new_h / h
