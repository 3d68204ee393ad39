"""`dfdc bench scale`: the preprocessing DAG on a generated DFDC-layout dataset of N videos.

For each N it generates the dataset (the sample generator, low resolution, 1 to
1.5 s per video), lays out a DVC project tracking it through a manifest (as a
DFDC-size dataset should be tracked), runs `index`, `detect` and `cut` (crops with the
fakes' diff masks, and clips) one after the other as their own processes (wall time and peak
resident memory of the largest process of each, from ``wait4``), records them
with ``dvc commit`` (its throughput in MB/s), then times ``dvc status`` and a
no-op ``dvc repro`` and counts every output's files and bytes. A handful of
generated 1080p 10 s videos give the per-video cost and bytes at DFDC's size,
next to a full single-thread decode of the same videos measured in the same
run, from which the full DFDC (128,154 videos, the degraded holdout a quarter of
them) is extrapolated for a machine with more cores.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["index", "detect", "cut"]
UNITS = ["index", "detect", "cut", "cut_degraded"]  # the 1080p per-unit table (and the DFDC estimate)
DFDC_VIDEOS = 128_154
DFDC_REAL_SHARE = 19_154 / 119_154  # the DFDC training set's reals among its videos
DFDC_PARTS = 50
SMALL = [(320, 240), (240, 320)]
HD = [(1920, 1080)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


# A small process runs the command, so that the peak it reports is the command's: a child forked from this
# (large) process would start its high-water mark at this one's size.
_PEAK = ("import resource, subprocess, sys; c = subprocess.run(sys.argv[1:]).returncode; "
         "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(c)")


def _measured(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and peak resident MiB (the largest of the process and its workers) of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-S", "-c", _PEAK, *cmd], cwd=cwd, env={**_env(), **(env or {})},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines()[::-1] if line.startswith("peak_kib "))
    return {"wall_s": wall, "peak_mib": peak / 1024, "output": proc.stdout}


def _dvc(repo: Path, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - t0, proc.stdout


def _stage_cmds() -> dict[str, list[str]]:
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {s: [sys.executable if w == "python" else w for w in doc[s]["cmd"].split()] for s in STAGES}


def _project(repo: Path, dataset: Path, workers: int) -> None:
    """A DVC project of the pipeline's code whose data is ``dataset``, tracked through its manifest."""
    from dfdc.datasets.index import write_manifest

    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "stages", "dfdc"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"root": str(dataset), "deps": "data/manifest.tsv"}
    for section in ("index", "detect", "crops"):
        params[section]["workers"] = workers
    params["detect"]["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data").mkdir()
    write_manifest(dataset, repo / "data" / "manifest.tsv")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@dfdc"], ["git", "config", "user.name", "bench"],
                [str(Path(sys.executable).parent / "dvc"), "init", "-q"],
                [str(Path(sys.executable).parent / "dvc"), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=repo, env=_env(), check=True, capture_output=True)


def _files(path: Path) -> int:
    return sum(1 for f in path.rglob("*") if f.is_file()) if path.is_dir() else int(path.exists())


def _outputs(repo: Path) -> dict[str, dict[str, float]]:
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    found = {}
    for s in STAGES:
        for out in doc[s]["outs"]:
            name = next(iter(out)) if isinstance(out, dict) else out
            p = repo / name
            found[name] = {"files": _files(p),
                           "mib": sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*"))
                                      if f.is_file()) / 2**20}
    return found


def _generate(out: Path, videos: int, resolutions, seconds: tuple[float, float], per_part: int,
              workers: int) -> dict[str, int]:
    from dfdc.datasets.sample import make_sample

    reals = max(1, round(videos / 3))
    parts = max(1, math.ceil(reals / per_part))
    summary = make_sample(out, seed=0, parts=parts, reals_per_part=math.ceil(reals / parts), fakes_per_real=2,
                          seconds=seconds, two_face_every=0, progress=False, workers=workers, resolutions=resolutions)
    return {"videos": summary.reals + summary.fakes, "reals": summary.reals, "fakes": summary.fakes, "parts": parts}


def _hashes(repo: Path, outs: list[str]) -> dict[str, str]:
    from dfdc.store import file_sha256

    files = [f for o in outs for f in ([repo / o] if (repo / o).is_file() else sorted((repo / o).rglob("*")))
             if f.is_file()]
    return {f.relative_to(repo).as_posix(): file_sha256(f) for f in files}


def _on_dask(repo: Path, workers: int) -> dict[str, Any]:
    """The `cut` stage again on a local Dask cluster of ``workers`` one-thread worker processes, its chunk
    folders emptied first: wall seconds (the cluster already up) and whether every output byte is the same."""
    import logging

    from distributed import LocalCluster

    outs = [next(iter(o)) if isinstance(o, dict) else o
            for o in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["cut"]["outs"]]
    local = _hashes(repo, outs)
    for d in ("data/crops", "data/clips"):
        shutil.rmtree(repo / d)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        m = _measured(_stage_cmds()["cut"], repo, env={"DFDC_SCHEDULER": cluster.scheduler_address})
    return {"wall_s": m["wall_s"], "same_bytes": _hashes(repo, outs) == local}


def _commit_linked(repo: Path) -> float:
    """Seconds of `dvc commit` into a fresh cache that hardlinks the outputs instead of copying them."""
    cache = repo.parent / "cache-hardlink"
    _dvc(repo, "cache", "dir", "--local", str(cache))
    _dvc(repo, "config", "--local", "cache.type", "hardlink")
    try:
        return _dvc(repo, "commit", "-f", *STAGES)[0]
    finally:
        _dvc(repo, "config", "--local", "--unset", "cache.type")
        _dvc(repo, "config", "--local", "--unset", "cache.dir")
        shutil.rmtree(cache, ignore_errors=True)


def run_scale(n: int, work: Path, workers: int = 2, per_part: int = 100, seconds: tuple[float, float] = (1.0, 1.5),
              resolutions=None, dvc: bool = True, dask: bool = False) -> dict[str, Any]:
    """One row of the scale table: N generated videos through the preprocessing stages (and DVC; with
    ``dask``, `cut` once more on a local Dask cluster)."""
    dataset = work / "videos"
    t0 = time.perf_counter()
    made = _generate(dataset, n, resolutions or SMALL, seconds, per_part, workers)
    generate_s = time.perf_counter() - t0
    repo = work / "repo"
    _project(repo, dataset, workers)
    stages = {}
    for stage, cmd in _stage_cmds().items():
        m = _measured(cmd, repo)
        stages[stage] = {"wall_s": m["wall_s"], "peak_mib": m["peak_mib"]}
    row: dict[str, Any] = {**made, "generate_s": generate_s, "stages": stages, "outputs": _outputs(repo),
                           "workers": workers, "decode": decode_cost(repo / "data" / "index.parquet")}
    if dask:
        row["dask"] = _on_dask(repo, workers)
    if dvc:
        mb = sum(o["mib"] for o in row["outputs"].values()) * 2**20 / 1e6
        row["commit_s"], _ = _dvc(repo, "commit", "-f", *STAGES)
        row["commit_mb_s"] = mb / row["commit_s"]
        row["commit_hardlink_mb_s"] = mb / _commit_linked(repo)
        row["status_s"], status = _dvc(repo, "status", *STAGES)
        repro = [_dvc(repo, "repro", *STAGES) for _ in range(2)]
        row["noop_repro_s"] = min(t for t, _ in repro)
        row["noop_ran"] = sum(out.count("Running stage") for _, out in repro)
        row["status_clean"] = "up to date" in status
    return row


def decode_cost(index_path: Path, every: int = 10) -> dict[str, float]:
    """Seconds per real video to decode the frames `detect` reads (every ``every``-th), which `crops` decodes
    again."""
    import pandas as pd

    from dfdc.video import read_frames, sample_indices

    reals = pd.read_parquet(index_path).query("label == 0 and ok")
    t0 = time.perf_counter()
    for r in reals.itertuples():
        read_frames(r.path, sample_indices(int(r.frames), every=every))
    return {"sampled_s": (time.perf_counter() - t0) / max(len(reals), 1)}


def full_decode_s(paths: list[str]) -> float:
    """CPU seconds per video of decoding every frame on one thread, converting none: the floor of any stage
    that reads a video."""
    import av

    c0 = time.process_time()
    for p in paths:
        with av.open(p) as c:
            stream = c.streams.video[0]
            stream.thread_type = "NONE"
            stream.codec_context.thread_count = 1
            for _ in c.decode(stream):
                pass
    return (time.process_time() - c0) / max(len(paths), 1)


def unit_costs(repo: Path) -> dict[str, dict[str, float]]:
    """CPU seconds (every thread of this process) and wall seconds per unit of each stage's work on the
    project ``repo`` has built, in this process and without any process start: per video for `index` and
    `cut` (crops with the fakes' diff masks, and clips), per real for `detect`, per degraded video for
    `cut_degraded` (every video degraded as the `degrade` stage draws it; the stage itself reads no video),
    and ``decode``: a full single-thread decode of the same videos."""
    import pandas as pd
    import torch

    from dfdc.config.clips import ClipsParams
    from dfdc.config.degrade import DegradeParams
    from dfdc.config.detect import DetectParams
    from dfdc.datasets.index import build_index
    from dfdc.faces.detector import FaceDetector
    from dfdc.preprocess.cut import clip_settings, cut_chunked
    from dfdc.preprocess.degrade import degrade_faces, degrade_holdout
    from dfdc.preprocess.detect import detect_rows

    params = yaml.safe_load((repo / "params.yaml").read_text())
    index = pd.read_parquet(repo / "data" / "index.parquet")
    faces = pd.read_parquet(repo / "data" / "faces.parquet")
    reals = index[index["label"] == 0].sort_values("video")
    n, n_real = len(index), len(reals)
    detect = DetectParams(**{**params["detect"], "device": "cpu"})
    clips = ClipsParams(**params["clips"])
    g = DegradeParams(**params["degrade"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stages' worker processes run one torch thread each
    try:
        det = FaceDetector.from_params(detect)
        detect_rows(reals.head(1), det, every=detect.every, workers=1, progress=False)  # warm-up
        out: dict[str, dict[str, float]] = {}

        def cost(stage: str, units: int, fn) -> Any:
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            out[stage] = {"cpu_s": (time.process_time() - c0) / max(units, 1),
                          "wall_s": (time.perf_counter() - t0) / max(units, 1), "units": units}
            return result

        def cut(idx, boxes, where, masks=True):
            return cut_chunked(idx, boxes, crops_dir=where / "crops", clips_dir=where / "clips",
                               margin=params["crops"]["margin"], masks=masks,
                               clips=clip_settings(clips), workers=0,
                               chunk=params["crops"]["chunk"], progress=False)

        with tempfile.TemporaryDirectory() as tmp:
            cost("index", n, lambda: build_index(params["data"]["root"], workers=0, progress=False))
            out["decode"] = {"cpu_s": full_decode_s(list(index["path"])), "units": n}
            cost("detect", n_real, lambda: detect_rows(reals, det, every=detect.every, min_track=detect.min_track,
                                                       max_gap=detect.max_gap, min_iou=detect.min_iou, workers=1,
                                                       progress=False))
            cost("cut", n, lambda: cut(index, faces, Path(tmp) / "c"))
            degraded, drawn = degrade_holdout(index, list(index["video"]), shares=g.shares,
                                              jpeg_quality=g.jpeg_quality, scale=g.scale, seed=g.seed)
            moved = degrade_faces(faces, index, drawn, {r.video: (int(r.width), int(r.height))
                                                        for r in degraded.itertuples()})
            cost("cut_degraded", n, lambda: cut(degraded, moved, Path(tmp) / "d", masks=False))
        return out
    finally:
        torch.set_num_threads(threads)


def _per_video(row: dict[str, Any]) -> dict[str, float]:
    """Seconds per unit of each stage from its wall time: per real for `detect`, per video otherwise."""
    units = {"index": row["videos"], "detect": row["reals"], "cut": row["videos"]}
    return {s: row["stages"][s]["wall_s"] * row["workers"] / max(units[s], 1) for s in STAGES}


def extrapolate(hd: dict[str, Any], cores: int = 16, videos: int = DFDC_VIDEOS, holdout: float = 0.25
                ) -> dict[str, Any]:
    """DFDC-size estimate from the 1080p row: CPU seconds per unit (:func:`unit_costs`, else the stages' wall
    time x processes per unit) x DFDC's units / ``cores``, i.e. perfect scaling over ``cores`` processes;
    `cut_degraded` runs on the holdout (``holdout`` of the videos: one fold of four)."""
    per = {s: c["cpu_s"] for s, c in hd["units"].items()} if hd.get("units") else _per_video(hd)
    reals = round(videos * DFDC_REAL_SHARE)
    units = {"index": videos, "detect": reals, "cut": videos, "cut_degraded": round(videos * holdout)}
    stages = [s for s in UNITS if s in per]
    hours = {s: per[s] * units[s] / cores / 3600 for s in stages}
    twice = hd["decode"]["sampled_s"] * reals / cores / 3600
    return {"per_unit_s": per, "units": units, "hours": hours, "total_h": sum(hours.values()), "cores": cores,
            "videos": videos, "reals": reals, "second_decode_h": twice}


def output_bytes(hd: dict[str, Any], videos: int = DFDC_VIDEOS) -> dict[str, dict[str, float]]:
    """Bytes per video of every output of the 1080p row, and the DFDC total (GB) at that rate."""
    per = {o: v["mib"] * 2**20 / max(hd["videos"], 1) for o, v in hd["outputs"].items()}
    return {o: {"per_video_mb": b / 1e6, "dfdc_gb": b * videos / 1e9} for o, b in per.items()}


def dfdc_file_counts(params: dict[str, Any], videos: int = DFDC_VIDEOS, parts: int = DFDC_PARTS) -> dict[str, int]:
    """Files of each chunked output at DFDC size under ``params``' chunk sizes (one done.json each)."""
    reals_per_part = math.ceil(videos * DFDC_REAL_SHARE / parts)
    detect = parts * math.ceil(reals_per_part / params["detect"]["chunk"])
    cut = parts * math.ceil(reals_per_part / params["crops"]["chunk"])  # crops and clips share the chunks
    return {"data/detect": 2 * detect + 1, "data/crops": 4 * cut + 1, "data/clips": 3 * cut + 1}


def bench_scale(ns: list[int], hd_reals: int = 2, workers: int = 2, work: str | Path | None = None,
                cores: int = 16, progress: bool = True) -> dict[str, Any]:
    """Rows for every N, the 1080p row (``hd_reals`` real 10 s videos, two fakes each; 0: none) and the
    DFDC extrapolation."""
    keep = work is not None
    base = Path(work) if keep else Path(tempfile.mkdtemp(prefix="dfdc-scale-"))
    try:
        rows = {}
        for n in ns:
            if progress:
                print(f"bench scale: N = {n} ...", flush=True)
            rows[n] = run_scale(n, base / f"n{n}", workers=workers, dask=True)
        hd = None
        if hd_reals > 0:
            if progress:
                print(f"bench scale: {hd_reals * 3} videos at 1080p, 10 s ...", flush=True)
            hd = run_scale(hd_reals * 3, base / "hd", workers=1, seconds=(10.0, 10.0), resolutions=HD)
            hd["units"] = unit_costs(base / "hd" / "repo")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        return {"rows": rows, "hd": hd, "dfdc": extrapolate(hd, cores) if hd else None,
                "dfdc_files": dfdc_file_counts(params), "dfdc_bytes": output_bytes(hd) if hd else None}
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def format_scale(result: dict[str, Any]) -> str:
    """Markdown tables of :func:`bench_scale`'s result."""
    rows = result["rows"]
    ns = list(rows)
    head = "| | " + " | ".join(f"N = {rows[n]['videos']}" for n in ns) + " |"
    lines = [head, "|---|" + "---|" * len(ns)]
    for s in STAGES:
        lines.append(f"| `{s}` wall s / peak MiB | " + " | ".join(
            f"{rows[n]['stages'][s]['wall_s']:.1f} / {rows[n]['stages'][s]['peak_mib']:.0f}" for n in ns) + " |")
    if all("dask" in rows[n] for n in ns):
        lines.append("| `cut` on 2 Dask workers: wall s, x local, same bytes | " + " | ".join(
            f"{rows[n]['dask']['wall_s']:.1f}, {rows[n]['dask']['wall_s'] / rows[n]['stages']['cut']['wall_s']:.2f}x, "
            f"{'yes' if rows[n]['dask']['same_bytes'] else 'NO'}" for n in ns) + " |")
    for key, label in (("status_s", "`dvc status` s"), ("noop_repro_s", "no-op `dvc repro` s"),
                       ("commit_mb_s", "`dvc commit` MB/s (copy)"),
                       ("commit_hardlink_mb_s", "`dvc commit` MB/s (cache.type hardlink)")):
        if all(key in rows[n] for n in ns):
            lines.append(f"| {label} | " + " | ".join(f"{rows[n][key]:.2f}" for n in ns) + " |")
    outs = list(rows[ns[0]]["outputs"])
    for o in outs:
        lines.append(f"| `{o}` files / MiB | " + " | ".join(
            f"{rows[n]['outputs'][o]['files']} / {rows[n]['outputs'][o]['mib']:.1f}" for n in ns) + " |")
    text = "\n".join(lines)
    hd, dfdc = result.get("hd"), result.get("dfdc")
    if hd and dfdc:
        per = dfdc["per_unit_s"]
        floor = per.get("decode")
        text += ("\n\n| 1080p, 10 s | CPU s per unit | x full decode | DFDC units | hours on "
                 f"{dfdc['cores']} cores |\n|---|---|---|---|---|\n")
        if floor:
            text += f"| full decode, one thread (floor) | {floor:.2f} | 1.00 | | |\n"
        for s in dfdc["hours"]:
            ratio = f"{per[s] / floor:.2f}" if floor else ""
            text += f"| `{s}` | {per[s]:.2f} | {ratio} | {dfdc['units'][s]:,} | {dfdc['hours'][s]:.1f} |\n"
        text += f"| total | | | {dfdc['videos']:,} videos | {dfdc['total_h']:.1f} |"
        text += (f"\n\nDecoding a real's sampled frames at 1080p: {hd['decode']['sampled_s']:.2f} s; `cut` decodes "
                 "them a second time: "
                 f"{dfdc['second_decode_h']:.2f} h of the total at DFDC size.")
    if result.get("dfdc_bytes"):
        text += "\n\n| output (1080p) | MB per video | GB at DFDC size |\n|---|---|---|\n" + "\n".join(
            f"| `{o}` | {b['per_video_mb']:.2f} | {b['dfdc_gb']:,.0f} |" for o, b in result["dfdc_bytes"].items())
    if hd and "commit_mb_s" in hd:
        text += (f"\n\n`dvc commit` of the 1080p outputs: {hd['commit_mb_s']:.0f} MB/s copying into the cache, "
                 f"{hd['commit_hardlink_mb_s']:.0f} MB/s with `cache.type hardlink`; then `dvc status` "
                 f"{hd['status_s']:.2f} s.")
    text += "\n\nFiles at DFDC size (50 parts, these chunk sizes): " + ", ".join(
        f"`{k}` {v:,}" for k, v in result["dfdc_files"].items())
    return text
