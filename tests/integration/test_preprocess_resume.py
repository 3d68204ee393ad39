"""Resumable preprocessing: chunks, their record, and each stage killed with SIGKILL and rerun."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, venv_env

from dfdc.codehash import code_digest
from dfdc.preprocess.chunks import DONE, ChunkStore, chunk_tmp, plan_chunks, run_chunks

PARAMS = """
detect: {every: 5, min_track: 2, workers: 1, chunk: 1, device: cpu}
crops: {margin: 0.3, workers: 1, chunk: 1}
landmarks: {workers: 0}
clips: {window: 4, stride: 1, per_track: 1, size: 32}
"""
CHUNKED = ("detect", "cut", "landmarks")


def _stage(stage: str) -> tuple[list[str], list[str]]:
    """The stage's command and outputs as dvc.yaml has them (run in a folder holding data/ and params.yaml)."""
    s = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    cmd = [sys.executable if w == "python" else str(REPO / w) if w.startswith("stages/") else w
           for w in s["cmd"].split()]
    return cmd, [next(iter(o)) if isinstance(o, dict) else o for o in s["outs"]]


def _cmd(stage: str) -> list[str]:
    return _stage(stage)[0]


def _run(stage: str, cwd: Path) -> str:
    proc = subprocess.run(_cmd(stage), cwd=cwd, env=venv_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _files(root: Path, outs: list[str]) -> dict[str, bytes]:
    found = {}
    for out in outs:
        p = root / out
        for f in ([p] if p.is_file() else sorted(p.rglob("*"))):
            if f.is_file():
                found[f.relative_to(root).as_posix()] = f.read_bytes()
    return found


def _recorded(work: Path) -> int:
    try:
        return len(json.loads((work / DONE).read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_at_random_point(stage: str, cwd: Path, work: Path, chunks: int, rng: random.Random) -> int:
    """Start the stage, SIGKILL it after a random number of recorded chunks plus a random delay; returns how
    many chunks were recorded when it died."""
    after = rng.randrange(0, chunks - 1)
    proc = subprocess.Popen(_cmd(stage), cwd=cwd, env=venv_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _recorded(work) < after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.4))
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its worker processes
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{stage} finished before the kill (after {after} chunks)"
    return _recorded(work)


@pytest.fixture(scope="module")
def clean_run(tiny_sample, tmp_path_factory) -> Path:
    """Every stage run uninterrupted, one after the other."""
    from dfdc.datasets.index import build_index, index_meta
    from dfdc.store import write_parquet

    root = tmp_path_factory.mktemp("clean")
    (root / "params.yaml").write_text(PARAMS)
    index = build_index(tiny_sample, progress=False)
    write_parquet(index, root / "data" / "index.parquet", meta=index_meta(index, str(tiny_sample)))
    for stage in CHUNKED:
        _run(stage, root)
    return root


@pytest.mark.parametrize("stage, seed", [("detect", 1), ("cut", 2)])
def test_a_stage_killed_at_a_random_point_resumes_to_the_same_bytes(clean_run, tmp_path, stage, seed):
    outs = _stage(stage)[1]
    shutil.copy(clean_run / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").mkdir()
    for f in (clean_run / "data").iterdir():  # the stage's inputs, not its outputs
        if f"data/{f.name}" not in outs:
            (shutil.copytree if f.is_dir() else shutil.copy)(f, tmp_path / "data" / f.name)
    work = tmp_path / next(o for o in outs if (clean_run / o).is_dir())
    chunks = _recorded(clean_run / work.relative_to(tmp_path))
    assert chunks >= 3
    recorded = _kill_at_random_point(stage, tmp_path, work, chunks, random.Random(seed))
    assert recorded < chunks
    out = _run(stage, tmp_path)
    assert f"{chunks - recorded} chunks processed" in out and f"{recorded} kept" in out, out
    assert not list(work.glob(".tmp.*"))
    clean, resumed = _files(clean_run, outs), _files(tmp_path, outs)
    assert sorted(resumed) == sorted(clean)
    assert [f for f in clean if clean[f] != resumed[f]] == []


def test_chunks_are_per_part_and_adding_a_part_changes_none_of_the_others():
    units = [("p1", f"v{i}", i) for i in range(5)] + [("p0", "a", 10)]
    plan = plan_chunks(units, 2, lambda us: us)
    assert [(c.name, c.keys) for c in plan] == [("p0.0000", ("a",)), ("p1.0000", ("v0", "v1")),
                                                 ("p1.0001", ("v2", "v3")), ("p1.0002", ("v4",))]
    more = plan_chunks(units + [("p2", "b", 11)], 2, lambda us: us)
    assert more[:4] == plan and more[4].name == "p2.0000"
    assert plan_chunks([(None, "x", 1)], 4, lambda us: us)[0].name == "all.0000"


def _write(chunk, directory):
    out = chunk_tmp(directory, chunk, "txt")
    out.write_text(",".join(chunk.keys))
    return {"txt": out}


def test_the_record_keeps_finished_chunks_and_redoes_changed_ones(tmp_path):
    identity = {"stage": "t", "params": {"a": 1}, "code": "x"}
    plan = plan_chunks([("p", f"v{i}", i) for i in range(4)], 2, lambda us: us)
    first = run_chunks(ChunkStore(tmp_path, identity), plan, _write, 0, desc="t", progress=False)
    assert (first.processed, first.kept) == (2, 0)
    assert sorted(f.name for f in tmp_path.iterdir()) == [DONE, "p.0000.txt", "p.0001.txt"]
    assert run_chunks(ChunkStore(tmp_path, identity), plan, _write, 0, desc="t", progress=False).processed == 0
    # one chunk's inputs change: that chunk alone is redone
    changed = plan_chunks([("p", f"v{i}", i + (i == 3)) for i in range(4)], 2, lambda us: us)
    again = run_chunks(ChunkStore(tmp_path, identity), changed, _write, 0, desc="t", progress=False)
    assert (again.processed, again.kept) == (1, 1)
    # a chunk gone from the plan is forgotten and its files deleted; a stray temporary file too
    (tmp_path / ".tmp.p.0009.txt").write_text("half")
    run_chunks(ChunkStore(tmp_path, identity), changed[:1], _write, 0, desc="t", progress=False)
    assert sorted(f.name for f in tmp_path.iterdir()) == [DONE, "p.0000.txt"]
    assert list(json.loads((tmp_path / DONE).read_text())["chunks"]) == ["p.0000"]
    # other params or other code: everything starts over, saying why
    for other in ({**identity, "params": {"a": 2}}, {**identity, "code": "y"}):
        store = ChunkStore(tmp_path, other)
        assert store.chunks == {} and not (tmp_path / "p.0000.txt").exists()
        assert ("params" if other["params"] != identity["params"] else "code") in store.restarted
        assert run_chunks(store, plan, _write, 0, desc="t", progress=False).processed == 2
    # a missing file makes its chunk unfinished
    (tmp_path / "p.0001.txt").unlink()
    assert run_chunks(ChunkStore(tmp_path, other), plan, _write, 0, desc="t", progress=False).processed == 1


def test_code_digest_follows_the_files_a_module_imports(tmp_path):
    pkg = tmp_path / "dfdc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from dfdc.sub import b\n")
    (pkg / "sub" / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 1\n")
    before = code_digest("dfdc.sub.a", root=tmp_path)
    (pkg / "c.py").write_text("Y = 2\n")  # not imported by a
    assert code_digest("dfdc.sub.a", root=tmp_path) == before
    (pkg / "sub" / "b.py").write_text("X = 2\n")  # imported inside a function
    assert code_digest("dfdc.sub.a", root=tmp_path) != before
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert code_digest("dfdc.sub.a", root=tmp_path) == code_digest("dfdc.sub.a", root=tmp_path)


# ------------------------------------------------------------------ on a Dask cluster


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, as `dask worker --nthreads 1` starts them."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as c:
        yield c


def test_the_stages_on_a_dask_cluster_give_the_local_bytes(clean_run, cluster, tmp_path):
    shutil.copy(clean_run / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(clean_run / "data" / "index.parquet", tmp_path / "data" / "index.parquet")
    env = {**venv_env(), "DFDC_SCHEDULER": cluster.scheduler_address}
    for stage in CHUNKED:
        proc = subprocess.run(_cmd(stage), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout}\n{proc.stderr}"
        outs = _stage(stage)[1]
        clean, remote = _files(clean_run, outs), _files(tmp_path, outs)
        assert sorted(remote) == sorted(clean)
        assert [f for f in clean if clean[f] != remote[f]] == [], stage
    assert not list(tmp_path.rglob(".tmp.*"))
    assert "run_on_worker" in cluster.scheduler.task_prefixes  # the chunks did run on the cluster


def _dies_once(chunk, directory, marks):
    """Writes half its file, then its worker process dies the first time it meets chunk p.0001."""
    out = chunk_tmp(directory, chunk, "txt")
    out.write_text("half")
    mark = Path(marks) / chunk.name
    if chunk.name == "p.0001" and not mark.exists():
        mark.write_text("died")
        os._exit(1)
    out.write_text(",".join(chunk.keys))
    return {"txt": out}


def test_a_worker_killed_mid_chunk_is_retried_to_the_same_bytes(cluster, tmp_path):
    import functools

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    identity = {"stage": "t", "params": {}, "code": "x"}
    plan = plan_chunks([("p", f"v{i}", i) for i in range(6)], 2, lambda us: us)
    (tmp_path / "marks").mkdir()
    work = functools.partial(_dies_once, marks=str(tmp_path / "marks"))
    local = run_chunks(ChunkStore(tmp_path / "local", identity), plan, _write, 0, desc="t", progress=False)
    remote = run_chunks(ChunkStore(tmp_path / "remote", identity), plan, work, 2, desc="t", progress=False,
                        scheduler=cluster.scheduler_address)
    assert (tmp_path / "marks" / "p.0001").exists()  # a worker did die in the middle of that chunk
    assert local.processed == remote.processed == 3
    assert sorted(f.name for f in (tmp_path / "remote").iterdir()) == [DONE, "p.0000.txt", "p.0001.txt", "p.0002.txt"]
    for name in ("p.0000.txt", "p.0001.txt", "p.0002.txt", DONE):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_worker_running_other_code_is_refused(cluster, tmp_path, monkeypatch):
    import dfdc.preprocess.chunks as chunks

    monkeypatch.setattr(chunks, "code_digest", lambda *modules: "0" * 64)  # the driver's code is now "other"
    plan = plan_chunks([("p", "v0", 0)], 1, lambda us: us)
    store = ChunkStore(tmp_path, {"stage": "t", "params": {}, "code": "x"})
    with pytest.raises(chunks.OtherCode, match="runs other dfdc code than the driver .* the driver's 000000000000"):
        run_chunks(store, plan, _write, 1, desc="t", progress=False, scheduler=cluster.scheduler_address)
    assert store.chunks == {}


def test_a_worker_whose_last_folder_was_deleted_moves_to_the_repository(tmp_path):
    from dfdc.preprocess.chunks import run_on_worker

    gone, repo = tmp_path / "gone", tmp_path / "repo"
    gone.mkdir()
    repo.mkdir()
    plan = plan_chunks([("p", "v0", 0)], 1, lambda us: us)
    here = os.getcwd()
    try:
        os.chdir(gone)
        gone.rmdir()  # as a long-lived worker's folder from an earlier run
        (tmp_path / "out").mkdir()
        out = run_on_worker(_write, plan[0], str(tmp_path / "out"), code=code_digest(), modules=(), cwd=str(repo))
        assert os.getcwd() == str(repo)
    finally:
        os.chdir(here)
    assert out["txt"].read_text() == "v0"
