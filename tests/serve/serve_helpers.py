"""A real `dfdc serve` on a free local port, serving a bundle of the tiny checkpoint (fixtures for tests/serve)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

LIMIT_MB = 4
QUEUE = 10


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    tmp: Path  # the server's TMPDIR: its private upload folder lives here
    log: Path

    def upload_folders(self) -> list[Path]:
        return sorted(self.tmp.glob("dfdc-serve-*"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    from dfdc.inference.bundle import write_bundle

    out = tmp_path_factory.mktemp("bundle") / "detector.dfdc"
    write_bundle(out, models=[str(tiny_checkpoint)])
    return out


def start_server(bundle: Path, work: Path, *extra: str) -> Server:
    port = free_port()
    tmp = work / "tmp"
    tmp.mkdir(parents=True)
    log = work / "serve.log"
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dfdc.cli", "serve", str(bundle), "--port", str(port), "--device",
                             "cpu", "--max-upload-mb", str(LIMIT_MB), "--queue", str(QUEUE), *extra],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dfdc serve exited with {proc.returncode}: {log.read_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                return Server(url, port, proc, tmp, log)
        except requests.ConnectionError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"dfdc serve did not answer in 120 s: {log.read_text()}")


@pytest.fixture(scope="session")
def server(bundle, tmp_path_factory):
    srv = start_server(bundle, tmp_path_factory.mktemp("serve"))
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
