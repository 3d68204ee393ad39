"""Resumable preprocessing: a stage's work in chunks of videos, each written whole and then recorded.

A stage plans its videos into chunks (per dataset part, in a fixed order, so
adding a part adds chunks and changes none), runs the chunks it has no record
of, one process each, and lists every finished chunk in ``done.json`` beside
its files. Files land under temporary names and are renamed into place before
the record is written, so a stage killed at any point keeps every recorded
chunk and redoes at most the ones in flight; a rerun gives the same bytes as an
uninterrupted run. The record carries the stage's params and a digest of its
code: under others the stage starts over rather than mix old and new outputs.
A chunk is also redone when what it reads changed (its videos, their faces).

The chunks run in local worker processes, or on a Dask cluster when a
scheduler address is given (``--scheduler`` or ``DFDC_SCHEDULER``): the same
chunks, the same bytes; this process stays the only writer of ``done.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
from tqdm import tqdm

from dfdc.codehash import code_digest
from dfdc.store import file_sha256, write_json

log = logging.getLogger("dfdc.preprocess")

DONE = "done.json"
TMP = ".tmp."
SCHEDULER_ENV = "DFDC_SCHEDULER"  # a Dask scheduler's address: the stages run their chunks on that cluster


@dataclass(frozen=True)
class Chunk:
    """A run of one part's units (videos, or crops) that a stage processes and records as one."""

    name: str
    keys: tuple[str, ...]  # its units' names (videos, or originals), in order
    inputs: str  # digest of everything the chunk reads
    rows: Any = field(default=None, compare=False, repr=False)  # what the work function gets


@dataclass
class RunSummary:
    """What a chunked run did: chunks kept from earlier runs, chunks processed now, and why it restarted."""

    kept: int
    processed: int
    units_processed: int
    unit: str = "videos"
    restarted: str = ""

    def __str__(self) -> str:
        again = f"; started over: {self.restarted}" if self.restarted else ""
        return f"{self.processed} chunks processed ({self.units_processed} {self.unit}), {self.kept} kept{again}"


def digest(obj: Any) -> str:
    """SHA-256 of a JSON-able value (sorted keys; numpy and pandas scalars as plain numbers)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_plain).encode()).hexdigest()


def _plain(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def file_identity(path: str | Path) -> list:
    """What a chunk notices of an input video without reading it: its path and size (-1: missing)."""
    try:
        return [str(path), os.stat(path).st_size]
    except OSError:
        return [str(path), -1]


def _safe(part: Any) -> str:
    text = str(part) if isinstance(part, str) and part else "all"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "all"


def plan_chunks(groups: Iterable[tuple[Any, str, Any]], size: int,
                inputs: Callable[[list[Any]], Any]) -> list[Chunk]:
    """Chunks of at most ``size`` units each from ``(part, video, unit)`` triples, in order within a part.

    A unit is what the stage works on (a video's index row, an original with its fakes);
    ``inputs(units)`` is what the chunk reads, digested into :attr:`Chunk.inputs`.
    Chunk names are ``<part>.<nnnn>``, so one part's chunks never depend on another's.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    by_part: dict[str, list[tuple[str, Any]]] = {}
    for part, video, unit in groups:
        by_part.setdefault(_safe(part), []).append((video, unit))
    chunks = []
    for part in sorted(by_part):
        items = by_part[part]
        for i in range(0, len(items), size):
            run = items[i:i + size]
            units = [u for _, u in run]
            chunks.append(Chunk(f"{part}.{i // size:04d}", tuple(str(v) for v, _ in run), digest(inputs(units)), units))
    return chunks


def chunk_tmp(directory: str | Path, chunk: Chunk, suffix: str) -> Path:
    """Where a work function writes the file ``<chunk>.<suffix>`` before :meth:`ChunkStore.commit` moves it in:
    a name of this attempt's own, so that a retried or duplicated attempt never writes over another's."""
    return Path(directory) / f"{TMP}{chunk.name}.{uuid.uuid4().hex[:12]}.{suffix}"


class ChunkStore:
    """A stage's output directory, filled chunk by chunk and recorded in ``done.json``."""

    def __init__(self, directory: str | Path, identity: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=_plain))
        self.restarted = ""
        self.chunks: dict[str, dict] = {}
        record = self._load()
        if record is not None:
            if record.get("identity") == self.identity:
                self.chunks = dict(record.get("chunks", {}))
            else:
                old = record.get("identity") or {}
                what = [k for k in sorted(set(old) | set(self.identity)) if old.get(k) != self.identity.get(k)]
                self.restarted = f"{', '.join(what) or 'record'} changed since the finished chunks were made"
                log.info("%s: %s; starting over", self.dir, self.restarted)
                for f in self.dir.iterdir():
                    if f.is_file():
                        f.unlink()

    def _load(self) -> dict | None:
        path = self.dir / DONE
        if not path.exists():
            if any(f.is_file() and not f.name.startswith(TMP) for f in self.dir.iterdir()):
                self.restarted = f"files without a {DONE} record"
                for f in self.dir.iterdir():
                    if f.is_file():
                        f.unlink()
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.restarted = f"unreadable {DONE} ({e})"
            return {"identity": None}

    def done(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` is recorded with the same videos and inputs and its files are all there."""
        r = self.chunks.get(chunk.name)
        if r is None or r.get("inputs") != chunk.inputs or r.get("keys") != list(chunk.keys):
            return False
        return all((self.dir / f).is_file() and (self.dir / f).stat().st_size == meta["bytes"]
                   for f, meta in r["files"].items())

    def commit(self, chunk: Chunk, files: dict[str, str | Path]) -> None:
        """Move a finished chunk's files (suffix -> temporary path) into place, then record it."""
        meta = {}
        for suffix, tmp in sorted(files.items()):
            final = self.dir / f"{chunk.name}.{suffix}"
            os.replace(tmp, final)
            meta[final.name] = {"bytes": final.stat().st_size, "sha256": file_sha256(final)}
        self.chunks[chunk.name] = {"keys": list(chunk.keys), "inputs": chunk.inputs, "files": meta}
        self._save()

    def _save(self) -> None:
        write_json({"identity": self.identity, "chunks": self.chunks}, self.dir / DONE)

    def prune(self, plan: list[Chunk]) -> int:
        """Forget chunks that are not in ``plan`` and delete every file no kept record lists; returns
        how many records went."""
        names = {c.name for c in plan}
        gone = [n for n in self.chunks if n not in names]
        for n in gone:
            del self.chunks[n]
        keep = {f for r in self.chunks.values() for f in r["files"]} | {DONE}
        for f in self.dir.iterdir():
            if f.is_file() and f.name not in keep:
                f.unlink()
        if gone:
            self._save()
        return len(gone)

    def table(self, plan: list[Chunk], suffix: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The ``<chunk>.<suffix>`` tables of ``plan``, concatenated in plan order."""
        parts = [pd.read_parquet(self.dir / f"{c.name}.{suffix}") for c in plan]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
        return pd.concat(parts, ignore_index=True)


@contextmanager
def _one_opencv_thread() -> Iterator[None]:
    """OpenCV on one thread while worker processes start and run (the processes are the parallelism). Set in
    this process before it forks: a forked child that changed OpenCV's thread pool could hang on the pool's
    threads, which the fork did not copy."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class OtherCode(RuntimeError):
    """A Dask worker runs other dfdc code than the driver."""


_READY: set = set()  # the initializers this worker process has run
_READY_LOCK = threading.Lock()


def run_on_worker(work: Callable, chunk: Chunk, directory: str | dict[str, str], *, code: str,
                  modules: tuple[str, ...], cwd: str, initializer: Callable | None = None,
                  initargs: tuple = ()) -> dict[str, Path]:
    """One chunk on a Dask worker: refuses (:class:`OtherCode`) unless the worker's code digest of ``modules``
    is the driver's ``code``; works in the driver's directory ``cwd`` (the repository, at the same path on
    every machine: a shared filesystem); runs ``initializer`` once per worker process."""
    found = code_digest(*modules)
    if found != code:
        raise OtherCode(f"worker {socket.gethostname()} (pid {os.getpid()}) runs other dfdc code than the driver "
                        f"({', '.join(modules)}: digest {found[:12]}, the driver's {code[:12]}): put the same "
                        "checkout at the same path on every worker and restart the workers")
    if not os.path.isdir(cwd):
        raise FileNotFoundError(f"worker {socket.gethostname()}: the repository is not at {cwd}; every worker needs "
                                "the repository and the videos at the driver's paths (a shared filesystem)")
    try:
        here = os.getcwd()
    except FileNotFoundError:  # a long-lived worker whose last folder was deleted since
        here = None
    if here != cwd:
        os.chdir(cwd)  # the index's paths are relative to the repository
    if initializer is not None:
        key = (initializer.__module__, initializer.__qualname__, repr(initargs))
        with _READY_LOCK:
            if key not in _READY:
                initializer(*initargs)
                _READY.add(key)
    return work(chunk, {n: Path(d) for n, d in directory.items()} if isinstance(directory, dict) else Path(directory))


def _modules(fn: Callable) -> tuple[str, ...]:
    """The dfdc module of a work function (none for a function from elsewhere)."""
    name = getattr(fn, "func", fn).__module__
    return (name,) if name.split(".")[0] == "dfdc" else ()


@contextmanager
def _executor(workers: int, scheduler: str | None, mp_context: str, initializer: Callable | None, initargs: tuple,
              resources: dict[str, float] | None) -> Iterator[tuple[Any, int, Callable]]:
    """(executor, chunks to keep in flight, submit(work, chunk, directory)) for local processes or a cluster."""
    import multiprocessing

    if not scheduler:
        ctx = multiprocessing.get_context(mp_context)
        with _one_opencv_thread(), ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer,
                                                       initargs=initargs) as ex:
            yield ex, 2 * workers, lambda work, c, d: ex.submit(work, c, d)
        return
    from distributed import Client

    client = Client(scheduler, set_as_default=False)
    try:
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise RuntimeError(f"the Dask scheduler at {scheduler} has no workers")
        ex = client.get_executor(resources=resources) if resources else client.get_executor()
        cwd, digests = os.getcwd(), {}

        def submit(work, c, d):
            mods = _modules(work)
            if mods not in digests:
                digests[mods] = code_digest(*mods)
            d = {n: str(Path(p).resolve()) for n, p in d.items()} if isinstance(d, dict) else str(Path(d).resolve())
            return ex.submit(run_on_worker, work, c, d, code=digests[mods], modules=mods, cwd=cwd,
                             initializer=initializer, initargs=initargs)

        yield ex, 2 * threads, submit
    finally:
        client.close()


def run_chunks(store: ChunkStore | dict[str, ChunkStore], plan: list[Chunk], work: Callable,
               workers: int, *, desc: str, initializer: Callable | None = None, initargs: tuple = (),
               mp_context: str = "fork", unit: str = "videos", progress: bool = True, scheduler: str | None = None,
               resources: dict[str, float] | None = None) -> RunSummary | dict[str, RunSummary]:
    """Run ``work`` on every chunk of ``plan`` that ``store`` has no record of, in ``workers`` processes (0: in
    this one), or on the Dask cluster at ``scheduler`` (default: ``$DFDC_SCHEDULER``; tasks ask for
    ``resources``, e.g. ``{"GPU": 1}``); each chunk is committed here as soon as it is finished. ``work`` returns
    the temporary files it wrote (suffix -> path from :func:`chunk_tmp` in the directory it is given).

    With several stores (name -> store, one plan), ``work`` gets {name: directory} of the stores that lack
    the chunk, returns {name: files} for those, and each store gets its own summary.
    """
    scheduler = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
    multi = isinstance(store, dict)
    stores: dict[str, ChunkStore] = store if multi else {"": store}
    for s in stores.values():
        s.prune(plan)
    lacking = {c.name: [n for n, s in stores.items() if not s.done(c)] for c in plan}
    pending = [c for c in plan if lacking[c.name]]

    def where(c: Chunk) -> Any:
        return {n: stores[n].dir for n in lacking[c.name]} if multi else stores[""].dir

    def commit(c: Chunk, files: Any) -> None:
        for n, f in (files.items() if multi else [("", files)]):
            stores[n].commit(c, f)

    bar = tqdm(total=sum(len(c.keys) for c in pending), desc=desc, unit=unit.rstrip("s"), disable=not progress)
    if workers <= 0 and not scheduler:
        if initializer is not None:
            initializer(*initargs)
        for c in pending:
            commit(c, work(c, where(c)))
            bar.update(len(c.keys))
    elif pending:
        with _executor(workers, scheduler, mp_context, initializer, initargs, resources) as (_, depth, submit):
            todo = iter(pending)
            running: dict[Future, Chunk] = {}
            while True:
                while len(running) < depth:
                    c = next(todo, None)
                    if c is None:
                        break
                    running[submit(work, c, where(c))] = c
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    c = running.pop(f)
                    commit(c, f.result())
                    bar.update(len(c.keys))
    for s in stores.values():  # what attempts that died or were duplicated left behind
        for f in s.dir.iterdir():
            if f.name.startswith(TMP) and f.is_file():
                f.unlink()
    bar.close()
    summaries = {}
    for n, s in stores.items():
        done_now = [c for c in pending if n in lacking[c.name]]
        summaries[n] = RunSummary(kept=len(plan) - len(done_now), processed=len(done_now),
                                  units_processed=sum(len(c.keys) for c in done_now), unit=unit,
                                  restarted=s.restarted)
    return summaries if multi else summaries[""]
