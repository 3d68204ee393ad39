"""Receiving an upload safely: streamed to a private folder under a size limit, then sniffed by its bytes.

Nothing the client sends names a path: the file is written under a name the server makes, and the
client's filename is only shown back to it (reduced to its last component, control characters dropped).
"""
from __future__ import annotations

import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

FIELD = "file"
DRAIN = 2  # an upload over the limit is read on (and dropped) up to this many times the limit, then cut


class UploadError(Exception):
    """An upload refused with an HTTP status and a sentence for the person who sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    path: Path  # in the server's private folder, under the server's own name
    name: str  # the client's filename, for display only
    size: int
    kind: str = ""  # "video" or "image" once sniffed


def display_name(raw: str) -> str:
    """The client's filename as text to show: its last path component, no control characters, at most 120."""
    name = PurePosixPath(raw.replace("\\", "/")).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return (name[:120] or "upload") if name not in (".", "..") else "upload"


async def receive(headers: dict[str, str], body: AsyncIterator[bytes], folder: Path, limit: int) -> Upload:
    """Stream the multipart field ``file`` of a request into ``folder``; raises :class:`UploadError`
    (400 not multipart / no file, 413 over ``limit`` bytes)."""
    mime, options = parse_options_header(headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError(400, f"send the file as multipart/form-data in the field {FIELD!r} "
                               "(curl -F file=@video.mp4)")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:
        raise UploadError(413, too_large(limit))
    path = folder / f"upload-{uuid.uuid4().hex}"
    state = {"field": b"", "value": b"", "headers": {}, "in_file": False, "seen": False, "name": ""}
    out = open(path, "xb")
    os.chmod(path, 0o600)
    size = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["in_file"] = opts.get(b"name") == FIELD.encode() and not state["seen"]
        if state["in_file"]:
            state["seen"] = True
            state["name"] = display_name(opts.get(b"filename", b"").decode("utf-8", "replace"))
        state["headers"] = {}

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        if state["in_file"]:
            size += end - start
            if size <= limit:
                out.write(data[start:end])

    parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data})
    received, cut = 0, False
    try:
        async for chunk in body:
            received += len(chunk)
            if received > DRAIN * limit + 1024 * 1024:
                cut = True  # far over: stop reading, answer now
                break
            if size <= limit:
                parser.write(chunk)
        if not cut and size <= limit:
            parser.finalize()
    except UploadError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed body is the client's error, said in one line
        out.close()
        path.unlink(missing_ok=True)
        raise UploadError(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
    out.close()
    if size > limit or cut:
        path.unlink(missing_ok=True)
        raise UploadError(413, too_large(limit))
    if not state["seen"]:
        path.unlink(missing_ok=True)
        raise UploadError(400, f"no file in the field {FIELD!r} (curl -F file=@video.mp4)")
    if size == 0:
        path.unlink(missing_ok=True)
        raise UploadError(400, "the file is empty")
    return Upload(path, state["name"] or "upload", size)


def too_large(limit: int) -> str:
    return f"the file is larger than this server accepts ({limit / 2**20:.0f} MiB; `dfdc serve --max-upload-mb`)"


_VIDEO = ((4, b"ftyp", "MP4 / MOV"), (0, b"\x1a\x45\xdf\xa3", "Matroska / WebM"), (0, b"FLV", "FLV"),
          (0, b"OggS", "Ogg"), (0, b"\x00\x00\x01\xba", "MPEG program stream"), (4, b"moov", "QuickTime"),
          (4, b"mdat", "QuickTime"), (4, b"wide", "QuickTime"), (4, b"free", "QuickTime"))


def sniff(path: Path) -> str:
    """``"image"`` or ``"video"`` from the file's first bytes (its name and the client's type are not trusted);
    raises :class:`UploadError` 415 saying what it looks like instead."""
    from dfdc.video import image_format

    with open(path, "rb") as f:
        head = f.read(512)
    if image_format(path) is not None:
        return "image"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "video"
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47:
        return "video"  # MPEG transport stream
    if any(head[at:at + len(sig)] == sig for at, sig, _ in _VIDEO):
        return "video"
    text = b"\x00" not in head and head[:-4 if len(head) == 512 else None].decode("utf-8", "replace").count("\ufffd") == 0
    looks = "text" if text else "neither a video container nor an image this server knows"
    raise UploadError(415, f"not a video or an image: its first bytes are {looks} (videos: MP4, MOV, WebM, "
                           "MKV, AVI, FLV, MPEG; images: PNG, JPEG, WebP, BMP)")
