"""Index a deepfake dataset: one row per video with its label, original and probed stream info.

Two layouts are understood:

* DFDC: part folders (``dfdc_train_part_N/``), each with a ``metadata.json``
  mapping file names to ``{"label": "REAL"|"FAKE", "original": ...}``; the
  root itself may also be a single part.
* FaceForensics++: ``original_sequences/<source>/<quality>/videos/A.mp4``
  (real) and ``manipulated_sequences/<Method>/<quality>/videos/A_B.mp4``
  (fake, made on target video ``A``).

Bad inputs never abort indexing: they are recorded with ``ok=False`` and an
``error`` text, and logged on the ``dfdc.index`` logger.
"""
from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
from tqdm import tqdm

from dfdc import store, video

log = logging.getLogger("dfdc.index")

COLUMNS = ["video", "path", "label", "original", "part", "method", "quality", "dataset",
           "frames", "fps", "width", "height", "ok", "error"]
LABELS = {"REAL": 0, "FAKE": 1}
METADATA = "metadata.json"
FFPP_REAL = "original_sequences"
FFPP_FAKE = "manipulated_sequences"
FFPP_SKIP_QUALITIES = {"masks"}


@dataclass
class _Entry:
    video: str
    label: int
    original: str | None = None
    part: str | None = None
    method: str | None = None
    quality: str | None = None
    dataset: str = "dfdc"
    errors: list[str] | None = None

    def fail(self, error: str) -> None:
        self.errors = (self.errors or []) + [error]


def _is_video(entry: os.DirEntry) -> bool:
    return entry.name.endswith(".mp4") and not entry.name.startswith(".") and entry.is_file()


def _videos_in(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if _is_video(e))
    except OSError:
        return []


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------- DFDC


def _dfdc_parts(root: Path) -> list[Path]:
    parts = [root] if (root / METADATA).exists() else []
    return parts + [d for d in _subdirs(root) if (d / METADATA).exists()]


def _read_metadata(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    return meta


def _dfdc_entries(root: Path, folder: Path) -> Iterator[_Entry]:
    part = folder.name
    on_disk = set(_videos_in(folder))
    prefix = "" if folder == root else f"{_rel(root, folder)}/"

    def entry(name: str, label: int) -> _Entry:
        row = _Entry(video=prefix + name, label=label, part=part, method="dfdc" if label == 1 else None)
        if Path(name).name != name or name in ("", ".", ".."):
            row.fail(f"bad file name in {METADATA}: {name!r}")
        return row

    try:
        meta = _read_metadata(folder / METADATA)
    except ValueError as e:
        for name in sorted(on_disk):
            row = entry(name, -1)
            row.fail(f"{METADATA} unreadable: {e}")
            yield row
        return

    for name in sorted(meta):
        info = meta[name]
        raw = info.get("label") if isinstance(info, dict) else None
        label = LABELS.get(str(raw).upper(), -1) if raw is not None else -1
        row = entry(name, label)
        if not isinstance(info, dict):
            row.fail(f"bad {METADATA} entry: expected an object, got {info!r}")
        else:
            # extra keys, as DFDC's own files carry: the source dataset, and a fake's manipulation type
            if isinstance(info.get("dataset"), str) and info["dataset"]:
                row.dataset = info["dataset"]
            if label == 1 and isinstance(info.get("method"), str) and info["method"]:
                row.method = info["method"]
            if label == -1:
                row.fail(f"unknown label {raw!r}")
        if not (folder / name).is_file():
            row.fail("file missing")
        if label == 1:
            original = info.get("original")
            if not isinstance(original, str) or not original:
                row.fail(f"original missing: {original!r}")
            else:
                row.original = prefix + original
                if original not in meta:
                    row.fail(f"original missing: {original} (not in {METADATA})")
                elif not (folder / original).is_file():
                    row.fail(f"original missing: {original} (not on disk)")
        yield row

    for name in sorted(on_disk - set(meta)):
        row = entry(name, -1)
        row.fail(f"not in {METADATA}")
        yield row


# ---------------------------------------------------------------- FaceForensics++


def _ffpp_video_dirs(base: Path) -> Iterator[tuple[str, str, Path]]:
    """(group, quality, videos folder) for ``base/<group>/<quality>/videos``."""
    for group in _subdirs(base):
        for quality in _subdirs(group):
            if quality.name not in FFPP_SKIP_QUALITIES and (quality / "videos").is_dir():
                yield group.name, quality.name, quality / "videos"


def _ffpp_original_name(stem: str) -> tuple[str, str]:
    """(preferred source, original file name) of the fake ``stem``; raises ValueError if unparseable."""
    if "__" in stem:
        ids, scene = stem.split("__")[:2]
        target = ids.split("_")[0]
        if not target or not scene:
            raise ValueError(stem)
        return "actors", f"{target}__{scene}.mp4"
    target, sep, _ = stem.partition("_")
    if not sep or not target:
        raise ValueError(stem)
    return "youtube", f"{target}.mp4"


def _ffpp_entries(root: Path) -> Iterator[_Entry]:
    reals: dict[tuple[str, str], dict[str, str]] = {}
    for source, quality, folder in _ffpp_video_dirs(root / FFPP_REAL):
        for name in _videos_in(folder):
            rel = _rel(root, folder / name)
            reals.setdefault((quality, name), {})[source] = rel
            yield _Entry(video=rel, label=0, quality=quality, dataset="ffpp")

    for method, quality, folder in _ffpp_video_dirs(root / FFPP_FAKE):
        for name in _videos_in(folder):
            row = _Entry(video=_rel(root, folder / name), label=1, method=method, quality=quality, dataset="ffpp")
            try:
                source, original = _ffpp_original_name(Path(name).stem)
            except ValueError:
                row.fail(f"original missing: cannot derive the original's name from {name!r}")
                yield row
                continue
            candidates = reals.get((quality, original), {})
            if candidates:
                row.original = candidates.get(source) or candidates[min(candidates)]
            else:
                row.original = f"{FFPP_REAL}/{source}/{quality}/videos/{original}"
                row.fail(f"original missing: {row.original}")
            yield row


# ---------------------------------------------------------------- probing


def _probe(path: Path) -> tuple[video.VideoInfo | None, str]:
    try:
        info = video.probe(path, verify=True)
    except video.VideoError as e:
        return None, str(e).removeprefix(f"{path}: ")
    except Exception as e:  # noqa: BLE001 - any per-file failure is recorded, not raised
        return None, f"{type(e).__name__}: {e}"
    return info, ""


def _row(root: Path, entry: _Entry, info: video.VideoInfo | None, probe_error: str) -> dict:
    errors = list(entry.errors or [])
    if probe_error:
        errors.append(probe_error)
    return {
        "video": entry.video,
        "path": str(root / entry.video),
        "label": entry.label,
        "original": entry.original,
        "part": entry.part,
        "method": entry.method,
        "quality": entry.quality,
        "dataset": entry.dataset,
        "frames": info.frames if info else -1,
        "fps": info.fps if info else math.nan,
        "width": info.width if info else -1,
        "height": info.height if info else -1,
        "ok": not errors,
        "error": "; ".join(errors),
    }


def _check_root(root: str | Path) -> Path:
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"dataset root not found: {path}")
    if not path.is_dir():
        raise ValueError(f"dataset root is not a directory: {path}")
    return path.resolve()


def build_index(root: str | Path, workers: int = 0, progress: bool = True) -> pd.DataFrame:
    """Index every video under ``root`` (DFDC or FaceForensics++ layout), probing each one.

    ``workers`` threads probe videos in parallel (0 = sequential). The ``path``
    column is ``root`` as given joined with the video's name: a relative root
    (``data/sample``) gives paths relative to the current directory, so the
    index is the same wherever the repository lies. Raises FileNotFoundError
    when ``root`` is missing and ValueError when it holds neither layout; every
    per-video problem is recorded in the table instead.
    """
    shown = Path(root)
    root = _check_root(root)
    parts = _dfdc_parts(root)
    is_ffpp = (root / FFPP_REAL).is_dir() or (root / FFPP_FAKE).is_dir()
    if not parts and not is_ffpp:
        raise ValueError(
            f"{shown}: unknown dataset layout: looked for DFDC ({METADATA} in the root or its "
            f"direct subfolders) and FaceForensics++ ({FFPP_REAL}/ or {FFPP_FAKE}/)"
        )
    entries = [e for part in parts for e in _dfdc_entries(root, part)]
    if is_ffpp:
        entries += list(_ffpp_entries(root))

    def work(entry: _Entry) -> dict:
        path = root / entry.video
        info, error = _probe(path) if path.is_file() else (None, "")
        return _row(shown, entry, info, error)

    bar = tqdm(total=len(entries), desc="index", unit="video", disable=not progress)
    rows = []
    try:
        if workers > 0:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for row in pool.map(work, entries):
                    rows.append(row)
                    bar.update()
        else:
            for entry in entries:
                rows.append(work(entry))
                bar.update()
    finally:
        bar.close()

    for row in rows:
        if not row["ok"]:
            log.warning("%s: %s", row["video"], row["error"])
    return _frame(rows)


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    nullable = ["original", "part", "method", "quality"]
    df = df.astype({
        "label": "int8", "frames": "int64", "fps": "float64", "width": "int64", "height": "int64",
        "ok": "bool", **{c: object for c in nullable},
    })
    for c in nullable:
        df[c] = df[c].where(df[c].notna(), None)
    return df.sort_values("video", kind="stable").reset_index(drop=True)


def index_meta(df: pd.DataFrame, root: str) -> dict:
    """What the indexed data is, for the artifacts made from it: root, videos per source dataset."""
    usable = df[df["ok"]]
    return {"data": {"root": str(root), "videos": int(len(usable)),
                     "datasets": {str(k): int(v) for k, v in usable["dataset"].value_counts().sort_index().items()}}}


def summarize_index(df: pd.DataFrame) -> str:
    """One line: video count, real / fake (/ unknown) counts and how many are not ok."""
    real, fake = int((df["label"] == 0).sum()), int((df["label"] == 1).sum())
    unknown = len(df) - real - fake
    labels = f"{real} real, {fake} fake" + (f", {unknown} unknown" if unknown else "")
    return f"index: {len(df)} videos ({labels}), {int((~df['ok']).sum())} not ok"


# ---------------------------------------------------------------- manifest


def write_manifest(root: str | Path, out: str | Path) -> int:
    """Write a stat-only manifest of ``root`` to ``out``; returns the number of videos.

    Lines are ``video<TAB>path<TAB>size<TAB>mtime_ns`` for every ``*.mp4`` and
    ``metadata<TAB>path<TAB>sha256`` for every ``metadata.json``, sorted. The
    file changes whenever a video is added, removed, resized or touched, so DVC
    can track a huge dataset through it without hashing the videos.
    """
    root = _check_root(root)
    lines, videos = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel = Path(path).relative_to(root).as_posix()
            if name.endswith(".mp4"):
                st = os.stat(path)
                lines.append(f"video\t{rel}\t{st.st_size}\t{st.st_mtime_ns}")
                videos += 1
            elif name == METADATA:
                try:
                    digest = store.file_sha256(path)
                except OSError as e:
                    digest = f"unreadable: {type(e).__name__}"
                lines.append(f"metadata\t{rel}\t{digest}")
    with store.atomic_path(out) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in sorted(lines)), encoding="utf-8")
    return videos
