"""Single-file readers: colour images and depth maps in the formats RGB-D data sets use.

Depth maps come back in metres with a validity mask. The sentinel and scale conventions:

============  ==========================================  ============================
format        stored value                                no reading
============  ==========================================  ============================
``png``       16-bit grey PNG, ``value / scale`` metres   0 and 65535
``pgm``       16-bit binary PGM (P5, big-endian)          0 and 65535
``npy``       any numeric array, ``value / scale``        0, +inf (NaN is an error)
``pfm``       Middlebury disparity (px) + ``calib.txt``   +inf, disparity <= 0
``dpt``       MPI Sintel float32 depth, ``value/scale``   0, +inf
``sun``       SUN RGB-D PNG, bits rotated right by 3      0
``nyu-raw``   NYU raw Kinect PGM (byte-swapped, 11 bit)   2047, or beyond 10 m
============  ==========================================  ============================

``scale`` is in stored units per metre: 1000 for millimetres (the default for ``png``/``pgm``),
5000 for TUM RGB-D and ICL-NUIM, 1 for ``npy`` and ``dpt`` (stored in metres).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import DataError, InputError, LimitError
from .conversions import (NYU_MAX_DEPTH, NYU_RAW_INVALID, disparity_to_depth, nyu_raw_to_metres,  # noqa: F401
                          parse_middlebury_calib, sun_decode)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SINTEL_TAG = 202021.25


class DepthFormat(str, Enum):
    PNG = "png"
    PGM = "pgm"
    NPY = "npy"
    PFM = "pfm"
    DPT = "dpt"
    SUN = "sun"
    NYU_RAW = "nyu-raw"


DEFAULT_SCALE = {DepthFormat.PNG: 1000.0, DepthFormat.PGM: 1000.0, DepthFormat.NPY: 1.0,
                 DepthFormat.DPT: 1.0, DepthFormat.SUN: 1000.0}
_BY_SUFFIX = {".png": DepthFormat.PNG, ".pgm": DepthFormat.PGM, ".npy": DepthFormat.NPY,
              ".pfm": DepthFormat.PFM, ".dpt": DepthFormat.DPT}

PathLike = str | os.PathLike[str]


def _read_bytes(path: PathLike) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; pass a file") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def check_pixels(width: int, height: int, name: str, max_pixels: int | None) -> None:
    """Refuse a ``width x height`` picture above ``max_pixels`` (None: no limit) before it is decoded."""
    if max_pixels is not None and width * height > max_pixels:
        raise LimitError(f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
                         f"{max_pixels / 1e6:.1f} megapixels; downscale it (SceneProof works at low resolution)")


def image_from_bytes(data: bytes, name: str = "image", *, max_pixels: int | None = None,
                 formats: Sequence[str] | None = None) -> np.ndarray:
    """Decode the bytes of a colour image (PNG, JPEG, PPM, ...) to uint8 (H, W, 3).

    The size is read from the header and checked against ``max_pixels`` before any pixel is
    decoded (decompression bombs); ``formats`` restricts the Pillow decoders tried (e.g.
    ``("PNG", "JPEG")`` for untrusted uploads). ``name`` only labels error messages.
    """
    allowed = "an image Pillow can read" if formats is None else " or ".join(formats)
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":  # checked before Pillow even parses it
        check_pixels(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), f"image {name}",
                     max_pixels)
    try:
        im = Image.open(io.BytesIO(data), formats=None if formats is None else list(formats))
    except Image.DecompressionBombError as e:
        raise LimitError(f"{name} is too large to decode safely ({e}); downscale it") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"image {name} is not {allowed} (no known image header); the file is corrupt or not an "
                        "image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {name} ({e}); the file is corrupt or not {allowed}") from None
    with im:
        check_pixels(im.width, im.height, f"image {name}", max_pixels)
        try:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey used as a colour image: keep the top 8 bits.
                arr = (np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot decode image {name} ({e}); the file is corrupt or not an image") from None


def read_image(path: PathLike) -> np.ndarray:
    """Decode a colour image file (PNG, JPEG, PPM, ...) to uint8 (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist; check the path")
    return image_from_bytes(_read_bytes(path), str(path))


def decode_png16(data: bytes, name: str = "depth", *, max_pixels: int | None = None) -> np.ndarray:
    """The raw values of a 16-bit grey PNG (its bytes) as uint16 (H, W); other bit depths are an error."""
    head = data[:26]
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise DataError(f"depth file {name} is not a PNG (bad signature); the file is corrupt or misnamed")
    bit_depth, colour_type = head[24], head[25]
    if colour_type != 0 or bit_depth != 16:
        kind = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(colour_type, "unknown")
        raise DataError(f"depth PNG {name} is {bit_depth}-bit {kind}; a 16-bit single-channel PNG is expected "
                        "(8-bit or colour images cannot hold metric depth)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    check_pixels(width, height, f"depth PNG {name}", max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode depth PNG {name} ({e}); the file is corrupt") from None
    if arr.ndim != 2 or arr.min() < 0 or arr.max() > 65535:
        raise DataError(f"depth PNG {name} decoded to an unexpected array {arr.shape} {arr.dtype}")
    return arr.astype(np.uint16)


def read_png16(path: PathLike) -> np.ndarray:
    """The raw values of a 16-bit grey PNG file as uint16 (H, W); other bit depths are an error."""
    return decode_png16(_read_bytes(path), str(path))


_PGM_HEADER = re.compile(rb"\A(P[25])\s+(?:#[^\n]*\s+)*(\d+)\s+(?:#[^\n]*\s+)*(\d+)\s+(?:#[^\n]*\s+)*(\d+)\s")


def decode_pgm16(data: bytes, name: str = "depth", *, max_pixels: int | None = None) -> np.ndarray:
    """The raw values of a 16-bit binary PGM (P5, big-endian as the format specifies; its bytes) as uint16."""
    m = _PGM_HEADER.match(data)
    if m is None:
        raise DataError(f"depth file {name} is not a PGM (no 'P5 width height maxval' header)")
    magic, w, h, maxval = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    if magic != b"P5":
        raise DataError(f"depth PGM {name} is ASCII (P2); convert it to binary P5")
    if maxval < 256:
        raise DataError(f"depth PGM {name} is 8-bit (maxval {maxval}); a 16-bit PGM (maxval > 255) is expected")
    if maxval > 65535 or w < 1 or h < 1:
        raise DataError(f"depth PGM {name} has an invalid header ({w}x{h}, maxval {maxval})")
    check_pixels(w, h, f"depth PGM {name}", max_pixels)
    payload = memoryview(data)[m.end():]
    if len(payload) < 2 * w * h:
        raise DataError(f"depth PGM {name} is truncated: {len(payload)} bytes of pixels, {2 * w * h} expected")
    return np.frombuffer(payload, dtype=">u2", count=w * h).reshape(h, w).astype(np.uint16)


def read_pgm16(path: PathLike) -> np.ndarray:
    """The raw values of a 16-bit binary PGM file (P5, big-endian as the format specifies) as uint16."""
    return decode_pgm16(_read_bytes(path), str(path))


_PFM_HEADER = re.compile(rb"\A(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s")


def decode_pfm(data: bytes, name: str = "depth", *, max_pixels: int | None = None) -> np.ndarray:
    """A single-channel PFM (its bytes) as float32 (H, W), rows top to bottom (the file stores them bottom-up)."""
    m = _PFM_HEADER.match(data)
    if m is None:
        raise DataError(f"{name} is not a PFM file (no 'Pf width height scale' header)")
    if m.group(1) == b"PF":
        raise DataError(f"PFM {name} has 3 channels; a single-channel (Pf) disparity or depth map is expected")
    w, h = int(m.group(2)), int(m.group(3))
    try:
        scale = float(m.group(4))
    except ValueError:
        raise DataError(f"PFM {name} has an invalid scale field {m.group(4)!r}") from None
    if w < 1 or h < 1 or scale == 0:
        raise DataError(f"PFM {name} has an invalid header ({w}x{h}, scale {scale})")
    check_pixels(w, h, f"PFM {name}", max_pixels)
    payload = memoryview(data)[m.end():]
    if len(payload) < 4 * w * h:
        raise DataError(f"PFM {name} is truncated: {len(payload)} bytes of pixels, {4 * w * h} expected")
    dtype = "<f4" if scale < 0 else ">f4"  # negative scale means little-endian
    arr = np.frombuffer(payload, dtype=dtype, count=w * h).reshape(h, w)
    return np.ascontiguousarray(arr[::-1]).astype(np.float32)


def read_pfm(path: PathLike) -> np.ndarray:
    """A single-channel PFM file as float32 (H, W), rows top to bottom (the file stores them bottom-up)."""
    return decode_pfm(_read_bytes(path), str(path))


def decode_dpt(data: bytes, name: str = "depth", *, max_pixels: int | None = None) -> np.ndarray:
    """An MPI Sintel ``.dpt`` depth file (its bytes) as float32 (H, W)."""
    if len(data) < 12:
        raise DataError(f"Sintel depth file {name} is truncated ({len(data)} bytes)")
    tag = np.frombuffer(data, dtype="<f4", count=1)[0]
    if tag != np.float32(SINTEL_TAG):
        raise DataError(f"{name} is not a Sintel .dpt file (header tag {tag!r}, expected {SINTEL_TAG}); "
                        "the file is corrupt or byte-swapped")
    w, h = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if not (0 < w < 100_000 and 0 < h < 100_000):
        raise DataError(f"Sintel depth file {name} has an invalid size {w}x{h}")
    check_pixels(w, h, f"Sintel depth file {name}", max_pixels)
    if len(data) - 12 != 4 * w * h:
        raise DataError(f"Sintel depth file {name} holds {len(data) - 12} bytes of depth, {4 * w * h} expected "
                        f"for {w}x{h}; the file is truncated or corrupt")
    return np.frombuffer(data, dtype="<f4", count=w * h, offset=12).reshape(h, w).astype(np.float32)


def read_dpt(path: PathLike) -> np.ndarray:
    """An MPI Sintel ``.dpt`` depth file as float32 (H, W)."""
    return decode_dpt(_read_bytes(path), str(path))


def decode_npy(data: bytes, name: str = "depth", *, max_pixels: int | None = None) -> np.ndarray:
    """A 2-D numeric ``.npy`` array (its bytes); the header's shape is checked before the array is read.

    Never unpickles (object arrays are refused); ``(1, H, W)`` and ``(H, W, 1)`` become ``(H, W)``.
    """
    if data[:2] == b"PK":  # a zip: an .npz archive holds several arrays, not one depth map
        try:
            np.load(io.BytesIO(data), allow_pickle=False).close()  # reads the zip directory only, not the arrays
        except Exception as e:  # noqa: BLE001 - a corrupt zip fails in many ways (BadZipFile, EOFError, ...)
            raise DataError(f"cannot read {name} as a .npy array ({e}); the file is corrupt") from None
        raise DataError(f"{name} is an .npz archive, not a single .npy array; save the depth map with np.save")
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fp)
    except Exception as e:  # noqa: BLE001 - numpy reports a bad header as ValueError, SyntaxError, TokenError, ...
        raise DataError(f"cannot read {name} as a .npy array ({e}); the file is corrupt") from None
    if dtype.hasobject or len(shape) not in (2, 3) or not (
            np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise DataError(f"depth array {name} must be a 2-D numeric (H, W) array, got {shape} {dtype}")
    if len(shape) == 3 and 1 not in (shape[0], shape[-1]):
        raise DataError(f"depth array {name} must be a 2-D numeric (H, W) array, got {shape} {dtype}")
    h, w = (shape[1:] if shape[0] == 1 else shape[:2]) if len(shape) == 3 else shape
    check_pixels(int(w), int(h), f"depth array {name}", max_pixels)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy fails on corrupt files in many ways (EOFError, ValueError, ...)
        raise DataError(f"cannot read {name} as a .npy array ({e}); the file is corrupt") from None
    return arr.reshape(int(h), int(w))


def read_middlebury_calib(path: PathLike) -> dict[str, float]:
    """Parse a Middlebury ``calib.txt`` file: focal length ``f`` (px), ``baseline`` (mm), ``doffs`` (px), ..."""
    return parse_middlebury_calib(_read_bytes(path).decode("utf-8", errors="replace"), str(path))


def _check_depth(depth: np.ndarray, valid: np.ndarray, path: PathLike) -> None:
    if not valid.any():
        raise DataError(f"depth map {path} has no valid pixel (all zero or marked missing); "
                        "the file is empty or the format/scale is wrong")


def depth_from_bytes(data: bytes, name: str = "depth", scale: float | None = None, *,
                 format: str | DepthFormat | None = None, calib: dict[str, float] | str | None = None,
                 max_depth: float | None = None, max_pixels: int | None = None,
                 missing_calib: str = "is needed to convert it to depth; pass it as calib"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Decode the bytes of a depth map: numpy (H, W) float32 metres (0 where invalid) and (H, W) bool valid.

    The one decoder behind :func:`read_depth_array` (files) and the HTTP service (uploads in
    memory). The format is ``format``, else ``name``'s suffix, else sniffed from the first bytes;
    ``calib`` is the Middlebury calibration of a PFM disparity map (parsed dict or the text of
    ``calib.txt``); ``max_pixels`` refuses a map whose header declares more pixels, before decoding.
    """
    fmt = _resolve_format(name, format, data)
    if scale is not None:
        if fmt in (DepthFormat.PFM, DepthFormat.NYU_RAW):
            raise InputError(f"scale does not apply to {fmt.value} depth (its conversion to metres is fixed)")
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            raise InputError(f"scale must be a positive number of stored units per metre, got {scale!r}")
    if fmt in (DepthFormat.PNG, DepthFormat.PGM, DepthFormat.SUN):
        decode = decode_pgm16 if fmt == DepthFormat.PGM else decode_png16
        raw = decode(data, name, max_pixels=max_pixels)
        if fmt == DepthFormat.SUN:
            raw = sun_decode(raw)
        valid = (raw > 0) & (raw < 65535)
        depth = raw.astype(np.float64) / float(scale or DEFAULT_SCALE[fmt])
    elif fmt == DepthFormat.NYU_RAW:
        # NYU wrote little-endian data under a big-endian PGM header
        raw = decode_pgm16(data, name, max_pixels=max_pixels).byteswap()
        depth, valid = nyu_raw_to_metres(raw)
    elif fmt == DepthFormat.PFM:
        disp = decode_pfm(data, name, max_pixels=max_pixels)
        if np.isnan(disp).any():
            raise DataError(f"disparity map {name} contains NaN; mark unknown pixels with +inf (Middlebury convention)")
        if calib is None:
            raise DataError(f"{name} holds disparity; its calib.txt (focal length, baseline, doffs) {missing_calib}")
        cal = calib if isinstance(calib, dict) else parse_middlebury_calib(calib, f"calibration of {name}")
        depth, valid = disparity_to_depth(disp, cal)
    else:
        arr = decode_npy(data, name, max_pixels=max_pixels) if fmt == DepthFormat.NPY else \
            decode_dpt(data, name, max_pixels=max_pixels)
        arr = arr.astype(np.float64)
        if np.isnan(arr).any():
            raise DataError(f"depth map {name} contains NaN; mark missing readings with 0 instead")
        if (arr < 0).any():
            raise DataError(f"depth map {name} contains negative values (min {arr.min():.4g}); depth must be >= 0")
        valid = np.isfinite(arr) & (arr > 0)  # +inf is "no reading", like 0 (the table above)
        depth = np.where(valid, arr, 0.0) / float(scale or DEFAULT_SCALE[fmt])
    if max_depth is not None:
        valid &= depth <= max_depth
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    _check_depth(depth, valid, name)
    return depth, valid


def read_depth_array(path: PathLike, scale: float | None = None, *, format: str | DepthFormat | None = None,
                     calib: PathLike | dict[str, float] | None = None,
                     max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`read_depth` but returns numpy (H, W) float32 metres and (H, W) bool valid."""
    path = Path(path)
    fmt = _resolve_format(str(path), format)  # before reading: an unknown type is reported as such
    cal: dict[str, float] | None = calib if isinstance(calib, dict) else None
    if fmt == DepthFormat.PFM and cal is None:
        if calib is not None:
            cal = read_middlebury_calib(calib)
        elif (path.parent / "calib.txt").exists():  # Middlebury keeps it next to the disparity map
            cal = read_middlebury_calib(path.parent / "calib.txt")
    return depth_from_bytes(_read_bytes(path), str(path), scale, format=fmt, calib=cal, max_depth=max_depth,
                        missing_calib="was not found next to it; pass calib=PATH")


def read_depth(path: PathLike, scale: float | None = None, *, format: str | DepthFormat | None = None,
               calib: PathLike | dict[str, float] | None = None,
               max_depth: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a depth map in metres: returns float32 (1, H, W) depth (0 where invalid) and bool (1, H, W) valid.

    ``format`` defaults from the suffix (``.png .pgm .npy .pfm .dpt``); SUN RGB-D and raw NYU
    files need ``format="sun"`` / ``format="nyu-raw"``. ``scale`` is stored units per metre
    (default 1000 for PNG/PGM/SUN, 1 for npy/dpt). ``calib`` is the Middlebury ``calib.txt``
    for PFM disparity (default: next to the file). Readings beyond ``max_depth`` metres are
    marked invalid. Raises :class:`DataError` for unreadable files, 8-bit depth images, NaN,
    negative values or a map with no valid pixel.
    """
    depth, valid = read_depth_array(path, scale, format=format, calib=calib, max_depth=max_depth)
    return torch.from_numpy(depth)[None], torch.from_numpy(valid)[None]


def sniff_depth_format(data: bytes) -> DepthFormat | None:
    """The depth format its first bytes announce (PNG, PGM, ``.npy``, PFM, Sintel ``.dpt``), or None."""
    if data.startswith(PNG_SIGNATURE):
        return DepthFormat.PNG
    if data[:2] in (b"P5", b"P2"):
        return DepthFormat.PGM
    if data.startswith(b"\x93NUMPY") or data.startswith(b"PK\x03\x04"):
        return DepthFormat.NPY
    if data[:2] in (b"Pf", b"PF"):
        return DepthFormat.PFM
    if len(data) >= 4 and np.frombuffer(data[:4], dtype="<f4")[0] == np.float32(SINTEL_TAG):
        return DepthFormat.DPT
    return None


def _resolve_format(name: str, format: str | DepthFormat | None, data: bytes | None = None) -> DepthFormat:
    """``format`` if given, else the suffix of ``name``, else (given the bytes) what they announce."""
    if format is None:
        suffix = Path(name).suffix.lower()
        fmt = _BY_SUFFIX.get(suffix) or (sniff_depth_format(data) if data is not None else None)
        if fmt is None:
            raise DataError(f"unknown depth file type {suffix!r} for {name}; pass format= one of "
                            f"{', '.join(f.value for f in DepthFormat)}")
        return fmt
    try:
        return DepthFormat(format)
    except ValueError:
        raise InputError(f"unknown depth format {format!r}; choose one of {', '.join(f.value for f in DepthFormat)}") from None
