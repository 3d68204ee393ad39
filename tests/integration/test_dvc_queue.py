"""DVC's experiment queue and a shared cache, for real, in temporary git repos.

Two tiny stages (python scripts that read params.yaml, nap, and record when they ran) stand in for our
heavy ones: what is under test is DVC's machinery, not the pipeline.

1. ``dvc exp run --queue`` twice, ``dvc queue start -j 2``: both experiments run at the same time in
   their own temporary copies, write into the one cache of the repo (the same stage's run-cache, and one
   output object both produce), and neither the workspace nor the other experiment is touched.
2. A local directory remote: ``dvc push`` from repo A, ``git clone`` + ``dvc pull`` into B, nothing to
   rerun; then one experiment through a bare git repo with ``dvc exp push`` / ``dvc exp pull``.

Known DVC queue races (docs/scale.md, "Parallel experiments and a shared cache") are what the assertions aim at:
failed tasks without logs (treeverse/dvc#10673, #8763), lock errors with -j > 1 (#8417), workers that leave
tasks queued (#10562) or never exit.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from helpers import user_env

TIMEOUT = 120  # any single git/dvc call
QUEUE_TIMEOUT = 150  # both queued experiments, start to finish

STAGE = '''\
"""One stage of the toy pipeline: python stage.py prep|train."""
import json, os, sys, time

import yaml

name = sys.argv[1]
p = yaml.safe_load(open("params.yaml"))
start = time.time()
time.sleep(p["nap"])  # long enough for two queued experiments to overlap
os.makedirs("out", exist_ok=True)
if name == "prep":
    value = p["scale"] * 10
else:
    value = json.load(open("out/prep.json"))["value"] + 1
    json.dump({"score": value, "scale": p["scale"]}, open("metrics.json", "w"))
    # the same bytes in both queued experiments (and not the baseline's): two workers commit one object
    bucket = "large" if p["scale"] >= 2 else "small"
    open("out/bucket.txt", "w").write((bucket + "\\n") * 50_000)
json.dump({"stage": name, "scale": p["scale"], "value": value, "start": start, "end": time.time(),
           "pid": os.getpid(), "cwd": os.getcwd()}, open(f"out/{name}.json", "w"))
'''

DVC_YAML = """\
stages:
  prep:
    cmd: python stage.py prep
    deps: [stage.py]
    params: [scale, nap]
    outs: [out/prep.json]
  train:
    cmd: python stage.py train
    deps: [stage.py, out/prep.json]
    params: [scale]
    outs: [out/train.json, out/bucket.txt]
    metrics:
      - metrics.json:
          cache: false
"""

TRACKED = ["params.yaml", "dvc.yaml", "dvc.lock", "metrics.json", "out/prep.json", "out/train.json",
           "out/bucket.txt"]


def sh(repo: Path, *cmd: str, check: bool = True, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``repo`` as on a user's machine, under a timeout; raise with its output when it fails."""
    try:
        proc = subprocess.run(cmd, cwd=repo, env=user_env(repo), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} ran past {timeout} s:\n{e.stdout}\n{e.stderr}") from e
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh(repo, "dvc", *args, **kw)


def queue_start(repo: Path, jobs: int, log: Path) -> str:
    """``dvc queue start -j JOBS``, its output through a file: the workers it daemonises inherit its stdout
    and stderr, so with pipes (capture_output) the call would only return once every worker has exited."""
    with log.open("w+") as out:
        try:
            proc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=user_env(repo),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"dvc queue start ran past {TIMEOUT} s") from e
        out.seek(0)
        text = out.read()
    assert proc.returncode == 0, f"dvc queue start failed ({proc.returncode}):\n{text}"
    return text


def init_repo(repo: Path, nap: float) -> Path:
    repo.mkdir(parents=True)
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(f"scale: 1\nnap: {nap}\n")
    sh(repo, "git", "init", "-q", "-b", "main")
    git_user(repo)
    dvc(repo, "init", "-q")
    with (repo / ".dvc/config").open("a") as config:  # = dvc config core.analytics false, a DVC start sooner
        config.write("[core]\n    analytics = false\n")
    return repo


def git_user(repo: Path) -> None:
    sh(repo, "git", "config", "user.email", "test@example.com")
    sh(repo, "git", "config", "user.name", "test")


def snapshot(repo: Path) -> dict[str, str]:
    return {name: hashlib.md5((repo / name).read_bytes()).hexdigest() for name in TRACKED}


def cached(repo: Path, md5: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def live_procs(root: Path) -> dict[int, str]:
    """Processes (zombies aside) working inside ``root``: queue workers, executors, stage commands."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # a daemonised parent that init has not reaped yet is a zombie: it no longer runs
        if cwd.startswith(str(root)) and state != "Z":
            found[int(proc.name)] = cmd
    return found


def wait_gone(root: Path, timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := live_procs(root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def queue_rows(repo: Path) -> tuple[dict[str, str], str]:
    """``dvc queue status`` as {experiment name: status}, and its worker line."""
    out = dvc(repo, "queue", "status").stdout
    rows, workers = {}, ""
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Worker status"):
            workers = line.strip()
        elif len(parts) >= 4 and parts[0] != "Task":
            rows[parts[1]] = parts[-1]
    return rows, workers


def experiments(repo: Path) -> dict[str, dict]:
    """``dvc exp show --json``: {name: {params, metrics, outs (path: md5), state}} for the HEAD baseline."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev["data"]
            found[exp["name"]] = {
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"]["metrics.json"]["data"],
                "outs": {path: o["hash"] for path, o in data["outs"].items()},
                "state": (exp.get("executor") or {}).get("state"),
                "error": rev.get("error"),
            }
    return found


def diagnostics(repo: Path, names) -> str:
    logs = [dvc(repo, "queue", "logs", n, check=False).stdout[-2000:] for n in names]
    workers = [p.read_text()[-3000:] for p in sorted((repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.out"))]
    return "\n".join(["-- queue logs", *logs, "-- celery workers", *workers])


def test_two_queued_experiments_run_at_once_and_share_the_cache(tmp_path):
    repo = init_repo(tmp_path / "repo", nap=0)
    dvc(repo, "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    before = snapshot(repo)
    runs_before = set((repo / ".dvc/cache/runs").rglob("*"))

    params = {"q-two": 2, "q-three": 3}
    for name, scale in params.items():
        queued = dvc(repo, "exp", "run", "--queue", "-S", f"scale={scale}", "-S", "nap=2", "-n", name)
        assert f"Queued experiment '{name}'" in queued.stdout
    rows, _ = queue_rows(repo)
    assert rows == {"q-two": "Queued", "q-three": "Queued"}
    assert snapshot(repo) == before and not sh(repo, "git", "status", "--porcelain").stdout.strip()

    try:
        assert "Started '2' new experiments task queue workers" in queue_start(repo, 2, tmp_path / "start.log")
        deadline, seen_running = time.monotonic() + QUEUE_TIMEOUT, 0
        while True:
            rows, workers = queue_rows(repo)
            seen_running = max(seen_running, sum(s == "Running" for s in rows.values()))
            if any(s == "Failed" for s in rows.values()) or all(s == "Success" for s in rows.values()):
                break
            assert time.monotonic() < deadline, f"queue still busy after {QUEUE_TIMEOUT} s: {rows} {workers}"
            time.sleep(3)  # each status call costs a second of CPU the workers need
        assert rows == {"q-two": "Success", "q-three": "Success"}, diagnostics(repo, params)
        # the workers idle up to 10 s before they exit; stop them now, then nothing may be left running
        assert "Queue workers will stop" in dvc(repo, "queue", "stop").stdout
        left = wait_gone(repo, 30)
        assert not left, f"left running after dvc queue stop: {left}"
        assert queue_rows(repo)[1] == "Worker status: 0 active, 0 idle"
    finally:
        if live_procs(repo):  # a failure above: take the queue down and leave nothing behind
            dvc(repo, "queue", "stop", "--kill", check=False)
            for pid in wait_gone(repo, 15):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*")), "an executor's temporary copy was left behind"

    # the workspace did not see the queued runs
    assert snapshot(repo) == before
    assert not sh(repo, "git", "status", "--porcelain").stdout.strip()
    assert "up to date" in dvc(repo, "status").stdout

    # apply brings back exactly that experiment, from the cache, and DVC agrees with it
    assert "have been applied" in dvc(repo, "exp", "apply", "q-three").stdout
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    exps = experiments(repo)
    assert set(exps) == set(params)  # both still listed
    e = exps["q-three"]
    assert yaml.safe_load((repo / "params.yaml").read_text()) == {"scale": 3, "nap": 2}
    assert json.loads((repo / "metrics.json").read_text()) == e["metrics"]
    for path, md5 in e["outs"].items():
        assert hashlib.md5((repo / path).read_bytes()).hexdigest() == md5, path
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["prep"]["params"]["params.yaml"]["scale"] == 3

    # each experiment has its own param, metrics and outputs, all of them in the repo's one cache
    records = {}
    for name, scale in params.items():
        e = exps[name]
        assert e["state"] == "success" and e["error"] is None, e
        assert e["params"] == {"scale": scale, "nap": 2}
        assert e["metrics"] == {"score": scale * 10 + 1, "scale": scale}
        for path, md5 in e["outs"].items():
            assert cached(repo, md5).is_file(), f"{name}: {path} ({md5}) is not in the cache"
        prep = json.loads(cached(repo, e["outs"]["out/prep.json"]).read_text())
        train = json.loads(cached(repo, e["outs"]["out/train.json"]).read_text())
        assert prep["scale"] == train["scale"] == scale and train["value"] == scale * 10 + 1
        # run in a temporary copy of the repo, never the workspace
        assert prep["cwd"] != str(repo) and prep["cwd"].startswith(str(repo / ".dvc/tmp/exps"))
        records[name] = (prep, train)
    (p2, t2), (p3, t3) = records["q-two"], records["q-three"]
    assert p2["cwd"] != p3["cwd"] and p2["pid"] != p3["pid"]
    # really at the same time: each experiment started before the other one ended
    assert max(p2["start"], p3["start"]) < min(t2["end"], t3["end"]), (seen_running, p2, t2, p3, t3)
    # both workers committed the same object, and it is whole
    assert exps["q-two"]["outs"]["out/bucket.txt"] == exps["q-three"]["outs"]["out/bucket.txt"]
    assert cached(repo, exps["q-two"]["outs"]["out/bucket.txt"]).read_text() == "large\n" * 50_000
    # the run-cache holds one entry per run of each stage, the two queued ones written concurrently
    entries = [yaml.safe_load(p.read_text()) for p in set((repo / ".dvc/cache/runs").rglob("*")) - runs_before
               if p.is_file()]
    runs = {(e["cmd"].split()[-1], e["params"]["params.yaml"]["scale"]): {o["path"]: o["md5"] for o in e["outs"]}
            for e in entries}
    assert set(runs) == {(stage, s) for stage in ("prep", "train") for s in params.values()}
    for name, scale in params.items():
        assert runs[("prep", scale)]["out/prep.json"] == exps[name]["outs"]["out/prep.json"]
        assert runs[("train", scale)]["out/train.json"] == exps[name]["outs"]["out/train.json"]
    # the applied workspace holds q-three's own run, byte for byte
    assert json.loads((repo / "out/prep.json").read_text()) == records["q-three"][0]
    assert not live_procs(repo)


def test_local_remote_clone_pull_and_experiment_push_pull(tmp_path):
    a = init_repo(tmp_path / "A", nap=0)
    store = tmp_path / "store"
    assert "Running stage 'prep'" in dvc(a, "repro").stdout
    dvc(a, "remote", "add", "-d", "store", str(store))
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "pipeline and its remote")
    assert "3 files pushed" in dvc(a, "push").stdout
    assert list(store.rglob("*")) and "in sync" in dvc(a, "status", "-c").stdout

    # B is a clone: .dvc/config (committed) brings the remote along, the cache comes from the remote
    sh(tmp_path, "git", "clone", "-q", str(a), "B")
    b = tmp_path / "B"
    git_user(b)
    assert str(store) in (b / ".dvc/config").read_text()
    assert not (b / "out/prep.json").exists() and not (b / "out/bucket.txt").exists()
    assert "3 files fetched" in dvc(b, "pull").stdout
    assert "Data and pipelines are up to date." in dvc(b, "status").stdout
    assert "in sync" in dvc(b, "status", "-c").stdout
    repro = dvc(b, "repro")
    assert "Running stage" not in repro.stdout and "didn't change, skipping" in repro.stdout
    for name in TRACKED:
        assert (b / name).read_bytes() == (a / name).read_bytes(), name
    assert not sh(b, "git", "status", "--porcelain").stdout.strip()

    # one experiment through a bare git repo both A and B know; its data through the DVC remote
    hub = tmp_path / "hub.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(hub))
    for repo in (a, b):
        sh(repo, "git", "remote", "add", "hub", str(hub))
    sh(a, "git", "push", "-q", "hub", "main")
    assert "Running stage 'prep'" in dvc(a, "exp", "run", "-S", "scale=5", "-n", "five").stdout
    five = experiments(a)["five"]
    assert five["metrics"] == {"score": 51, "scale": 5}
    assert "Pushed experiment five" in dvc(a, "exp", "push", "hub", "five").stdout
    assert "refs/exps/" in sh(a, "git", "ls-remote", str(hub)).stdout
    assert not any(cached(b, md5).exists() for md5 in five["outs"].values())
    assert "Pulled experiment" in dvc(b, "exp", "pull", "hub", "five").stdout
    assert all(cached(b, md5).is_file() for md5 in five["outs"].values())  # exp pull fetched the data too
    assert "five" in dvc(b, "exp", "list").stdout
    assert "have been applied" in dvc(b, "exp", "apply", "five").stdout
    assert "Data and pipelines are up to date." in dvc(b, "status").stdout
    for name in TRACKED:  # A's workspace holds the experiment it just ran
        assert (b / name).read_bytes() == (a / name).read_bytes(), name
    assert yaml.safe_load((b / "params.yaml").read_text())["scale"] == 5
