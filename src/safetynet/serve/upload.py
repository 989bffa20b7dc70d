"""Reading an upload under limits: body size, time, multipart fields, content types; all in memory.

The body is read as it streams in, counting bytes against ``--max-upload-mb`` and time against
``--timeout``; a declared ``Content-Length`` above the limit is refused before a byte of the
body is read. The multipart body is parsed in memory (``python-multipart``'s streaming parser),
so no upload ever touches the disk: nothing to clean up, whatever happens.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

#: The fields of POST /v1/verify: name -> is it a file (text fields are at most MAX_TEXT_FIELD bytes).
FIELDS = {"image": True, "depth": True, "calib": True, "depth_scale": False, "depth_format": False}
REQUIRED = ("image", "depth")
MAX_TEXT_FIELD = 64 * 1024  # calib.txt is a few hundred bytes; depth_scale a number

#: Content types accepted per file field ("" = the client sent none; it is then sniffed from the bytes).
OCTET = {"", "application/octet-stream"}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/pjpeg"} | OCTET
DEPTH_TYPES = {"image/png", "image/x-portable-graymap", "image/x-portable-anymap", "image/x-portable-floatmap",
               "image/x-pfm", "application/x-npy", "application/npy", "application/x-numpy"} | OCTET
CALIB_TYPES = {"text/plain"} | OCTET


class HTTPProblem(Exception):
    """A request the service refuses: an HTTP status and a one-line message naming the problem and the fix."""

    def __init__(self, status: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # the body was not read to its end: the connection cannot be reused
        self.headers = headers or {}


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


def mb(n: float) -> str:
    return f"{n / 1e6:g} MB"


def check_declared_length(content_length: str | None, limit: int) -> None:
    """413 for a ``Content-Length`` above ``limit``, 400 for a malformed one; nothing is read."""
    if content_length is None:
        return
    try:
        n = int(content_length)
        if n < 0:
            raise ValueError
    except ValueError:
        raise HTTPProblem(400, f"Content-Length {content_length!r} is not a byte count; send a valid header",
                          close=True) from None
    if n > limit:
        raise HTTPProblem(413, f"the upload is {mb(n)}, above the limit of {mb(limit)}; send smaller files "
                               "(SceneProof works at 160x120: downscale or re-encode), or raise --max-upload-mb",
                          close=True)


async def read_body(stream: AsyncIterator[bytes], limit: int, deadline: float, timeout: float) -> bytes:
    """The whole body, or 413 once more than ``limit`` bytes arrived, or 408 when ``deadline``
    (``loop.time()``) passes first: a client that stalls mid-upload holds nothing for long."""
    loop = asyncio.get_running_loop()
    chunks, n = [], 0
    it = stream.__aiter__()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _timeout(n, timeout)
        try:
            chunk = await asyncio.wait_for(it.__anext__(), remaining)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise _timeout(n, timeout) from None
        n += len(chunk)
        if n > limit:
            raise HTTPProblem(413, f"the upload passed {mb(limit)}, the limit; send smaller files (SceneProof works "
                                   "at 160x120: downscale or re-encode), or raise --max-upload-mb", close=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _timeout(received: int, timeout: float) -> HTTPProblem:
    return HTTPProblem(408, f"the upload did not finish within {timeout:g} s ({received} bytes received); send the "
                            "whole request at once, or raise --timeout", close=True)


def parse_form(body: bytes, content_type: str) -> dict[str, Part]:
    """The multipart fields of ``body`` by name; 400/415 for anything but the documented fields."""
    if not body:
        raise HTTPProblem(400, "the request has no body; send multipart/form-data with the files 'image' and 'depth'")
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        shown = content_type.split(";")[0] if content_type else "none"
        raise HTTPProblem(415, f"the request body is {shown}; send multipart/form-data with the files 'image' and "
                               "'depth' (e.g. curl -F image=@photo.png -F depth=@depth.png)")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPProblem(400, "the multipart/form-data body has no boundary; let your HTTP client build the form")

    parts: dict[str, Part] = {}
    current: dict = {"headers": {}, "field": b"", "value": b"", "part": None}

    def on_part_begin() -> None:
        current["headers"], current["part"] = {}, None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][current["field"].lower()] = current["value"]
        current["field"], current["value"] = b"", b""

    def on_headers_finished() -> None:
        disp, opts = parse_options_header(current["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if disp != b"form-data" or not name:
            raise HTTPProblem(400, "a multipart part has no form-data name; send the fields 'image' and 'depth'")
        if name not in FIELDS:
            raise HTTPProblem(400, f"unknown field {name!r}; send 'image' and 'depth' (files), optionally "
                                   "'depth_scale', 'depth_format' and 'calib'")
        if name in parts:
            raise HTTPProblem(400, f"the field {name!r} was sent twice; send it once")
        filename = opts.get(b"filename")
        ctype = parse_options_header(current["headers"].get(b"content-type", b""))[0].decode("latin-1")
        part = Part(name, None if filename is None else filename.decode("utf-8", "replace"), ctype.lower())
        parts[name] = current["part"] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current["part"]
        part.data += data[start:end]
        if not FIELDS[part.name] and len(part.data) > MAX_TEXT_FIELD:
            raise HTTPProblem(400, f"the field {part.name!r} is longer than {MAX_TEXT_FIELD} bytes; it holds a "
                                   "short value")

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_headers_finished": on_headers_finished, "on_part_data": on_part_data}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except HTTPProblem:
        raise
    except Exception as e:  # noqa: BLE001 - python-multipart raises its own errors for malformed bodies
        raise HTTPProblem(400, f"the multipart/form-data body is malformed ({e}); let your HTTP client build the "
                               "form") from None
    missing = [n for n in REQUIRED if n not in parts]
    if missing:
        got = ", ".join(repr(n) for n in parts) or "none"
        raise HTTPProblem(400, f"missing field {' and '.join(repr(n) for n in missing)} (got {got}); send the colour "
                               "image as 'image' and the depth map as 'depth'")
    for name, allowed, what in (("image", IMAGE_TYPES, "a PNG or JPEG colour image (image/png, image/jpeg)"),
                                ("depth", DEPTH_TYPES, "a 16-bit PNG/PGM, .npy or PFM depth map"),
                                ("calib", CALIB_TYPES, "the text of Middlebury's calib.txt")):
        part = parts.get(name)
        if part is None:
            continue
        if part.content_type not in allowed:
            raise HTTPProblem(415, f"the field {name!r} has content type {part.content_type}; send {what}")
        if FIELDS[name] and name != "calib" and not part.data:
            raise HTTPProblem(400, f"the field {name!r} is empty; attach the file")
    return parts


def text_field(parts: dict[str, Part], name: str) -> str | None:
    part = parts.get(name)
    if part is None:
        return None
    try:
        return bytes(part.data).decode("utf-8").strip() or None
    except UnicodeDecodeError:
        raise HTTPProblem(400, f"the field {name!r} is not UTF-8 text") from None


def float_field(parts: dict[str, Part], name: str, hint: str) -> float | None:
    text = text_field(parts, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise HTTPProblem(400, f"{name} must be a positive number, got {text[:40]!r}; {hint}")
    return value


__all__ = ["FIELDS", "HTTPProblem", "Part", "check_declared_length", "float_field", "parse_form", "read_body",
           "text_field"]
