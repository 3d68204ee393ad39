"""The HTTP service: ``POST /score`` (a file in, the result as JSON), ``GET /healthz``, the page at ``/``.

One upload is scored at a time, in one worker thread; at most ``queue`` uploads are held at once
(receiving, waiting or scoring), each on disk in a private temporary folder and deleted once scored. An
upload that finds the queue full gets 503 with Retry-After before its body is read, so memory stays
bounded however many clients call at once. The OpenAPI schema is at ``/openapi.json`` (``/docs`` shows it
with Swagger UI, which the browser fetches from a CDN).
"""
import asyncio
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from dfdc.serve.upload import FIELD, UploadError, receive, sniff

UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD], "properties": {FIELD: {"type": "string", "format": "binary",
                                                                  "description": "a video or an image"}}}}}}}


def create_app(detector: Any, *, max_upload: int = 200 * 2**20, queue: int = 10, bundle: str = ""):
    """The FastAPI app serving ``detector`` (:class:`dfdc.api.Detector`).

    (No postponed annotations in this module: FastAPI reads the endpoints' annotations, whose types are
    imported here, at definition.)
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    state = {"held": 0, "peak": 0, "scored": 0, "refused_busy": 0}
    scorer = ThreadPoolExecutor(1, thread_name_prefix="dfdc-score")
    folder = Path(tempfile.mkdtemp(prefix="dfdc-serve-"))  # mode 0700: this user's only

    @asynccontextmanager
    async def lifespan(_app):
        yield
        scorer.shutdown(wait=True)
        shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title="dfdc detector", version=_version(), lifespan=lifespan,
                  description="Score a video or an image for deepfakes with a trained dfdc ensemble.")
    page = resources.files("dfdc.serve").joinpath("page.html").read_text(encoding="utf-8")

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page.replace("{{MAX_MB}}", f"{max_upload / 2**20:.0f}"))

    @app.get("/healthz", summary="Liveness, the loaded detector and the queue")
    async def healthz() -> dict:
        return {"status": "ok", "bundle": bundle, "detector": detector.describe(), "queue": queue,
                "held": state["held"], "peak_held": state["peak"], "scored": state["scored"],
                "refused_busy": state["refused_busy"], "max_upload_bytes": max_upload}

    @app.post("/score", summary="Score one uploaded video or image", openapi_extra=UPLOAD_SCHEMA,
              responses={200: {"description": "the result: prob, label, reason, per-frame and per-face scores, "
                                              "thumbnails and Grad-CAM maps as PNG data URLs"},
                         400: {"description": "not a multipart upload, or no file"},
                         413: {"description": "larger than --max-upload-mb"},
                         415: {"description": "not a video or an image (sniffed from its bytes)"},
                         503: {"description": "the queue is full: try again after Retry-After seconds"}})
    async def score(request: Request) -> JSONResponse:
        if state["held"] >= queue:
            state["refused_busy"] += 1
            return error(503, f"busy: {queue} uploads are being scored or waiting; try again in a few seconds",
                         **{"Retry-After": "5"})
        state["held"] += 1
        state["peak"] = max(state["peak"], state["held"])
        upload = None
        try:
            upload = await receive(dict(request.headers), request.stream(), folder, max_upload)
            upload.kind = sniff(upload.path)
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(scorer, lambda: detector.score(upload.path, name=upload.name,
                                                                                explain=True))
            state["scored"] += 1
            body = result.to_dict(images=True)
            body["timings_s"]["total"] = time.perf_counter() - t0
            return JSONResponse(body)
        except UploadError as e:
            return error(e.status, e.message)
        except Exception as e:  # noqa: BLE001 - the client gets a sentence, the server goes on
            return error(500, f"the server could not score it: {type(e).__name__}: {e}")
        finally:
            state["held"] -= 1
            if upload is not None:
                upload.path.unlink(missing_ok=True)

    return app


def _version() -> str:
    import dfdc

    return dfdc.__version__


def serve(bundle: "str | Path", *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          runtime: str = "torch", max_upload_mb: int = 200, queue: int = 10) -> int:
    """Load ``bundle`` and serve it until interrupted (`dfdc serve`)."""
    import uvicorn

    from dfdc.api import Detector

    detector = Detector.load(bundle, device=device, runtime=runtime)
    for note in detector.notes:
        print(note, file=sys.stderr)
    app = create_app(detector, max_upload=max_upload_mb * 2**20, queue=queue, bundle=str(bundle))
    print(f"serve: {', '.join(detector.models)} from {bundle} on http://{host}:{port}/ (page), POST /score, "
          f"GET /healthz, /docs; uploads up to {max_upload_mb} MiB, {queue} held at once", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
