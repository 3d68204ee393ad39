"""`dfdc serve` for real: a subprocess on a free local port, called over HTTP."""
from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import requests
from serve_helpers import LIMIT_MB, QUEUE, bundle, server  # noqa: F401 - fixtures


def post(server, path: Path, name: str | None = None, timeout: float = 120) -> requests.Response:
    with open(path, "rb") as f:
        return requests.post(f"{server.url}/score", files={"file": (name or path.name, f)}, timeout=timeout)


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_scores_a_video_with_faces_thumbnails_and_gradcam(server, odd_inputs):
    r = post(server, odd_inputs / "portrait.mp4")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "video" and body["label"] in ("FAKE", "REAL") and body["reason"] == ""
    assert 0.01 <= body["prob"] <= 0.99 and body["filename"] == "portrait.mp4"
    assert body["faces"] and all(len(f["box"]) == 4 for f in body["faces"])
    assert body["frame_scores"] and body["thumbnails"][0]["image"].startswith("data:image/png;base64,")
    assert body["gradcam"] and body["gradcam"][0]["image"].startswith("data:image/png;base64,")
    assert server.upload_folders() and not list(server.upload_folders()[0].iterdir())  # deleted once scored


def test_an_image_is_sniffed_by_its_bytes_not_its_name(server, odd_inputs):
    r = post(server, odd_inputs / "png named as video.mp4")
    assert r.status_code == 200 and r.json()["kind"] == "image" and r.json()["reason"] == ""
    r = post(server, odd_inputs / "still.png", name="holiday.txt")
    assert r.status_code == 200 and r.json()["kind"] == "image"


def test_a_text_file_is_refused_with_a_reason(server, odd_inputs):
    r = post(server, odd_inputs / "notes.txt", name="video.mp4")
    assert r.status_code == 415
    assert "not a video or an image" in r.json()["error"] and "text" in r.json()["error"]
    assert not list(server.upload_folders()[0].iterdir())


def test_a_truncated_mp4_is_answered_unscored_with_the_reason(server, odd_inputs):
    r = post(server, odd_inputs / "cut.mp4")
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == "UNSCORED" and "truncated or corrupt video" in body["reason"] and body["prob"] == 0.5


def test_an_oversized_upload_gets_413_before_and_while_it_is_read(server, tmp_path):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/score")
    conn.putheader("Content-Type", "multipart/form-data; boundary=xyz")
    conn.putheader("Content-Length", str((LIMIT_MB + 1) * 2**20))
    conn.endheaders()  # no body sent: the answer comes from the declared length alone
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than this server accepts (4 MiB" in json.loads(resp.read())["error"]
    conn.close()
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0\0\0\x18ftypisom" + bytes((LIMIT_MB * 2**20) + 4096))

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\r\n" +
                big.read_bytes() + b"\r\n--xyz--\r\n")
        for k in range(0, len(body), 2**16):
            yield body[k:k + 2**16]

    r = requests.post(f"{server.url}/score", data=chunks(), timeout=60,
                      headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert not list(server.upload_folders()[0].iterdir())


def test_client_filenames_never_reach_the_filesystem(server, odd_inputs):
    for name in ("../../escape.mp4", 'say "cheese" \'twice\'.mp4', "..", "a/b\\c.mp4"):
        r = post(server, odd_inputs / "portrait.mp4", name=name)
        assert r.status_code == 200, (name, r.text)
        shown = r.json()["filename"]
        assert "/" not in shown and "\\" not in shown and shown not in ("..", ".")
    assert r.json()["filename"] == "c.mp4"
    everything = [p.name for p in server.tmp.rglob("*")] + [p.name for p in server.tmp.parent.rglob("*")]
    assert not any("escape" in n or "cheese" in n for n in everything)


def test_not_multipart_and_no_file_are_400(server):
    r = requests.post(f"{server.url}/score", data=b"raw bytes", timeout=30)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = requests.post(f"{server.url}/score", files={"other": ("a.mp4", b"x")}, timeout=30)
    assert r.status_code == 400 and "no file in the field 'file'" in r.json()["error"]


def test_twelve_concurrent_uploads_with_a_queue_of_ten_are_all_answered(server, odd_inputs):
    before = requests.get(f"{server.url}/healthz", timeout=10).json()
    rss_before = _rss_peak_kib(server.proc.pid)
    results: list[requests.Response | Exception] = [None] * 12
    go = threading.Barrier(12)

    def one(k: int) -> None:
        go.wait()
        try:
            results[k] = post(server, odd_inputs / "portrait.mp4", name=f"v{k}.mp4", timeout=300)
        except Exception as e:  # noqa: BLE001 - recorded: the assertion below names it
            results[k] = e

    threads = [threading.Thread(target=one, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [r.status_code if isinstance(r, requests.Response) else repr(r) for r in results]
    assert set(codes) <= {200, 503}, codes
    ok = [r.json() for r in results if r.status_code == 200]
    busy = [r for r in results if r.status_code == 503]
    assert len(ok) >= QUEUE and len(ok) + len(busy) == 12
    assert sorted(b["filename"] for b in ok) == sorted(f"v{k}.mp4" for k, r in enumerate(results)
                                                       if r.status_code == 200)
    assert all(b["reason"] == "" and b["faces"] for b in ok)  # none lost: each answered with its own result
    for r in busy:
        assert "busy" in r.json()["error"] and r.headers["Retry-After"] == "5"
    after = requests.get(f"{server.url}/healthz", timeout=10).json()
    assert after["held"] == 0 and after["peak_held"] <= QUEUE
    assert after["scored"] - before["scored"] == len(ok) and after["refused_busy"] - before["refused_busy"] == len(busy)
    assert not list(server.upload_folders()[0].iterdir())
    # uploads wait on disk, one is scored at a time: the server's peak memory barely moves
    assert _rss_peak_kib(server.proc.pid) - rss_before < 300 * 1024


def test_healthz_openapi_and_the_page(server):
    h = requests.get(f"{server.url}/healthz", timeout=10).json()
    assert h["status"] == "ok" and h["queue"] == QUEUE and h["detector"]["models"][0]["name"] == "tiny"
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert "multipart/form-data" in spec["paths"]["/score"]["post"]["requestBody"]["content"]
    assert {"413", "415", "503"} <= set(spec["paths"]["/score"]["post"]["responses"])
    page = requests.get(server.url, timeout=10)
    assert page.status_code == 200 and "Drop a video or an image" in page.text and "4 MiB" in page.text


def test_binds_to_this_machine_only_by_default(server):
    port_hex = f"{server.port:04X}"
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"]
    assert listening == [f"0100007F:{port_hex}"]  # 127.0.0.1, not 0.0.0.0
    assert f"http://127.0.0.1:{server.port}/" in server.log.read_text()


def test_a_scoring_failure_is_a_500_with_a_sentence_and_the_upload_is_deleted(tmp_path, odd_inputs, monkeypatch):
    import tempfile
    import time

    import uvicorn
    from serve_helpers import free_port

    from dfdc.serve.app import create_app

    class Broken:
        def describe(self) -> dict:
            return {"models": []}

        def score(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Broken()), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with open(odd_inputs / "portrait.mp4", "rb") as f:
            r = requests.post(f"http://127.0.0.1:{port}/score", files={"file": ("a.mp4", f)}, timeout=30)
        assert r.status_code == 500
        assert r.json()["error"] == "the server could not score it: RuntimeError: out of memory"
        assert [p for folder in tmp_path.glob("dfdc-serve-*") for p in folder.iterdir()] == []
    finally:
        server.should_exit = True
        thread.join(timeout=30)
