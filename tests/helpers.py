"""Helpers the tests share: environments for subprocesses, scratch DVC repositories, sample copies."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FFPP = REPO.parent / "shared" / "data" / "ffpp"


def venv_env() -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's bin (python, dvc, dfdc)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def make_dvc_repo(dst: Path, params: str) -> Path:
    """Copy the pipeline (dvc.yaml, stages, dfdc) into a fresh git+DVC repo with ``params``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", "stages", "dfdc"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / name)
    (dst / "params.yaml").write_text(params)
    env = venv_env()
    run = lambda *cmd: subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@example.com")
    run("git", "config", "user.name", "test")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    return dst


def user_env(repo: Path) -> dict[str, str]:
    """As on a user's machine: Python writes bytecode, and the repo's own dfdc is the one imported."""
    env = venv_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(repo)
    return env


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` in ``repo``; raise with its output when it fails and ``check``."""
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env or venv_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_real_and_fake(sample: Path, part: Path) -> tuple[str, str]:
    """Copy one real video of ``sample``'s first part and one of its fakes into folder ``part``: (real, fake)."""
    part.mkdir(parents=True)
    meta = json.loads((sample / "dfdc_train_part_0" / "metadata.json").read_text())
    real = next(k for k, v in meta.items() if v["label"] == "REAL")
    fake = next(k for k, v in meta.items() if v.get("original") == real)
    for name in (real, fake):
        shutil.copy(sample / "dfdc_train_part_0" / name, part / name)
    return real, fake


def in_terminal(cmd: list[str], cwd: Path, env: dict[str, str], columns: int, rows: int = 50,
                timeout: float = 120) -> str:
    """What ``cmd`` shows in a terminal of ``columns`` x ``rows`` (a pseudo-terminal: programs page and size
    their output as for a person), escape codes removed; a pager is closed with ``q``."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, in the terminal
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update({k: v for k, v in env.items() if k != "LESS"}, TERM="xterm", COLUMNS=str(columns),
                          LINES=str(rows))
        os.execvpe(cmd[0], cmd, os.environ)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 5)
        if not ready:  # quiet for 5 s: a pager waits for a key
            os.write(fd, b"q")
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\x1b[()][0-9A-B]|\r", "", out.decode(errors="replace"))
