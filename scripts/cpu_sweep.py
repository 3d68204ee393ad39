"""Which of the DAG's outputs change with the CPU's instruction sets, stage by stage.

Builds the pipeline once in a scratch DVC project (the reference: every library on the SIMD paths it
detects), then reruns every stage of ``dvc.lock`` under each variant below, each time on the
reference's inputs (so a difference belongs to the stage that made it, not to one upstream), and
compares every output file's bytes with the reference's. A variant switches one library's
instruction sets down to a baseline every x86-64 CPU offers; ``same`` changes nothing and shows what a
stage does not repeat on its own. Writes a JSON report and prints a table.

    python scripts/cpu_sweep.py --out sweep.json [--epochs 1] [--parts 4] [--variants all same ...]

x264's variant puts a ``sitecustomize`` on the stages' path that unpins x264's instruction set
(``dfdc.video.X264_ASM = None``: the paths x264 detects), as the code ran before it was pinned.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Each variant's environment: the libraries' own switches, down to a baseline every x86-64 CPU has.
VARIANTS: dict[str, dict[str, str]] = {
    "same": {},
    "x264": {"_X264_DETECTED": "1"},
    "opencv": {"OPENCV_CPU_DISABLE": "AVX512-SKX,AVX2,FP16,FMA3,AVX,SSE4.2,POPCNT,SSE4.1,SSSE3"},
    "numpy": {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
    "openblas": {"OPENBLAS_CORETYPE": "Prescott"},
    "torch": {"ATEN_CPU_CAPABILITY": "default"},
    "torch_libs": {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"},
    "onednn": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"},
    "numba": {"NUMBA_CPU_NAME": "generic"},
}
# every library at its baseline at once (x264 stays pinned: its baseline is the pinned set)
VARIANTS["all"] = {k: v for name, env in VARIANTS.items() if name != "x264" for k, v in env.items()}
VARIANTS["torch_pinned"] = {**VARIANTS["torch"], **VARIANTS["torch_libs"]}  # every torch kernel at its baseline

_SITE = "import dfdc.video\ndfdc.video.X264_ASM = None\n"


def _env(repo: Path, extra: dict[str, str], site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    env.update({k: v for k, v in extra.items() if not k.startswith("_")})
    if "_X264_DETECTED" in extra:
        env["PYTHONPATH"] = f"{site}{os.pathsep}{repo}"
    return env


def _run(cmd: list[str] | str, cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def _project(repo: Path, epochs: int | None, parts: int | None) -> None:
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "stages", "dfdc"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if parts:
        params["sample"]["parts"] = parts
    if epochs:
        for group in params["train"].values():
            for entry in (group or {}).values() if isinstance(group, dict) else ():
                entry["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(repo, {}, repo)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "sweep@dfdc"],
                ["git", "config", "user.name", "sweep"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"], ["git", "commit", "-qm", "sweep"]):
        _run(cmd, repo, env)


def _files(repo: Path, outs: list[str]) -> dict[str, Path]:
    found = {}
    for out in outs:
        p = repo / out
        for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []):
            if f.is_file():
                found[f.relative_to(repo).as_posix()] = f
    return found


def _digest(files: dict[str, Path]) -> dict[str, str]:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}


def _how_far(a: Path, b: Path) -> str:
    """In words, how two files with different bytes differ (numbers for tables and arrays)."""
    import numpy as np
    import pandas as pd

    try:
        if a.suffix == ".parquet":
            x, y = pd.read_parquet(a), pd.read_parquet(b)
            if x.shape != y.shape or list(x.columns) != list(y.columns):
                return f"shape {x.shape} vs {y.shape}"
            num = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
            other = [c for c in x.columns if c not in num and not x[c].astype(str).equals(y[c].astype(str))]
            worst = max((float(np.nanmax(np.abs(x[c].to_numpy(float) - y[c].to_numpy(float))) or 0)
                         for c in num), default=0.0)
            return f"max |diff| {worst:.3g}" + (f"; columns {other} differ" if other else "")
        if a.suffix == ".npz" or zipfile.is_zipfile(a):
            za, zb = zipfile.ZipFile(a), zipfile.ZipFile(b)
            names = za.namelist()
            if names != zb.namelist():
                return "other members"
            diff = [n for n in names if za.read(n) != zb.read(n)]
            return f"{len(diff)} of {len(names)} members differ"
        if a.suffix == ".json":
            return "json: " + ", ".join(_json_diff(json.loads(a.read_text()), json.loads(b.read_text())))[:300]
    except Exception as e:  # noqa: BLE001 - a report, not a check
        return f"({type(e).__name__}: {e})"
    return f"{a.stat().st_size} vs {b.stat().st_size} bytes"


def _json_diff(x, y, key: str = "") -> list[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        return [d for k in sorted(set(x) | set(y)) for d in _json_diff(x.get(k), y.get(k), f"{key}.{k}")]
    if x != y:
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return [f"{key.lstrip('.')} {abs(x - y):.3g}"]
        return [key.lstrip(".")]
    return []


def sweep(work: Path, variants: list[str], epochs: int | None, parts: int | None, stages: list[str] | None) -> dict:
    """Reference build, then each stage under each variant on the reference's inputs; per-file comparison."""
    repo = work / "repo"
    site = work / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    t0 = time.perf_counter()
    if not (repo / "dvc.lock").exists():  # a kept scratch folder holds its reference build already
        _project(repo, epochs, parts)
        _run(["dvc", "repro", "-q"], repo, _env(repo, {}, site))
    report: dict = {"reference_s": time.perf_counter() - t0, "epochs": epochs, "parts": parts,
                    "cpu": _cpu(), "variants": {v: VARIANTS[v] for v in variants}, "stages": {}}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    aside = work / "aside"
    for stage, entry in lock.items():
        if stages and stage.split("@")[0] not in stages and stage not in stages:
            continue
        outs = [o["path"] for o in entry.get("outs", [])]
        ref_files = _files(repo, outs)
        ref = _digest(ref_files)
        row = report["stages"][stage] = {"files": len(ref), "variants": {}}
        for v in variants:
            shutil.rmtree(aside, ignore_errors=True)
            for out in outs:
                if (repo / out).exists():
                    (aside / out).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(repo / out, aside / out)
            try:
                secs = _run(entry["cmd"], repo, _env(repo, VARIANTS[v], site))
                new_files = _files(repo, outs)
                new = _digest(new_files)
                differ = sorted(k for k in set(ref) | set(new) if ref.get(k) != new.get(k))
                row["variants"][v] = {
                    "seconds": round(secs, 2), "differ": len(differ),
                    "files": {k: (_how_far(aside / k, new_files[k]) if k in ref and k in new else "missing")
                              for k in differ[:20]}}
            finally:
                for out in outs:
                    if (repo / out).is_dir():
                        shutil.rmtree(repo / out)
                    elif (repo / out).exists():
                        (repo / out).unlink()
                    if (aside / out).exists():
                        os.replace(aside / out, repo / out)
            print(f"{stage:32s} {v:10s} {row['variants'][v]['differ']:4d} of {len(ref)} files differ "
                  f"({row['variants'][v]['seconds']:.1f} s)", flush=True)
    return report


_DETECT_COST = """
import sys, time, json
import pandas as pd, torch
torch.set_num_threads(1)  # as a detect worker process runs
from dfdc.datasets.index import build_index
from dfdc.faces.detector import FaceDetector
from dfdc.preprocess.detect import detect_rows
index = build_index(sys.argv[1], workers=0, progress=False)
reals = index[index["label"] == 0].sort_values("video")
det = FaceDetector(device="cpu")
detect_rows(reals.head(1), det, every=10, workers=1, progress=False)  # warm-up
c0 = time.process_time()
faces, _ = detect_rows(reals, det, every=10, workers=1, progress=False)
print(json.dumps({"cpu_s_per_real": (time.process_time() - c0) / len(reals), "reals": len(reals),
                  "faces": len(faces), "box_sum": float(faces[["x1", "y1", "x2", "y2"]].to_numpy().sum())}))
"""


def detect_cost(work: Path, variants: list[str], repeat: int = 2) -> dict:
    """CPU seconds per real video of detection (one process, one torch thread, every 10th frame) under each
    variant, on the demo's resolutions and on 1080p videos: what pinning torch's instruction sets costs."""
    from dfdc.datasets.sample import make_sample

    roots = {"sample (480-854 px)": work / "small", "1080p": work / "hd"}
    if not roots["1080p"].exists():
        make_sample(roots["sample (480-854 px)"], seed=3, parts=1, reals_per_part=4, fakes_per_real=0,
                    seconds=(2.0, 2.0), progress=False)
        make_sample(roots["1080p"], seed=3, parts=1, reals_per_part=2, fakes_per_real=0, seconds=(2.0, 2.0),
                    resolutions=[(1920, 1080)], progress=False)
    out: dict = {}
    for name, root in roots.items():
        for v in variants:
            runs = []
            for _ in range(repeat):
                proc = subprocess.run([sys.executable, "-c", _DETECT_COST, str(root)],
                                      env=_env(ROOT, VARIANTS[v], work), capture_output=True, text=True, check=True)
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["cpu_s_per_real"])
            out.setdefault(name, {})[v] = best
            print(f"detect cost {name:22s} {v:12s} {best['cpu_s_per_real']:.3f} CPU s per real", flush=True)
    return out


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    top = [f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags][:1]
    return f"{model} ({top[0] if top else 'no AVX'}), {os.cpu_count()} cores"


def table(report: dict) -> str:
    """The report as a markdown table: a stage per row, a variant per column."""
    variants = list(report["variants"])
    lines = ["| stage | files | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for stage, row in report["stages"].items():
        cells = []
        for v in variants:
            r = row["variants"].get(v)
            cells.append("" if r is None else "=" if r["differ"] == 0 else f"**{r['differ']}**")
        lines.append(f"| {stage} | {row['files']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--stages", nargs="*", help="only these stages (a foreach group's name covers its members)")
    ap.add_argument("--epochs", type=int, help="every model trains this many epochs (default: params.yaml's)")
    ap.add_argument("--parts", type=int, help="sample.parts (default: params.yaml's)")
    ap.add_argument("--detect-cost", action="store_true", help="instead: CPU seconds of detection per real video "
                                                               "under each variant (demo sizes and 1080p)")
    ap.add_argument("--work", help="scratch folder, kept (default: a temporary one, deleted); a folder kept from "
                                   "an earlier sweep keeps its reference build")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dfdc-sweep-"))
    try:
        if args.detect_cost:
            Path(args.out).write_text(json.dumps(detect_cost(work, args.variants), indent=1) + "\n")
            return 0
        report = sweep(work, args.variants, args.epochs, args.parts, args.stages)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
