"""The FastAPI app behind ``rnnkit serve``: one page, its two static files, and a small JSON API.

``GET /``, ``GET /static/app.js|style.css`` — the page (package data; no other file is ever served).
``GET /api/info`` — the model, its vocabulary and the request limits.
``POST /api/generate`` — ``{prompt, length, temperature, top_k, top_p, seed, stream}``; streamed as NDJSON lines,
    ``{"seed", "prompt"}``, then ``{"text": c}`` per character as it is sampled, then ``{"done": true}``;
    with ``stream: false`` one ``{"seed", "prompt", "text"}``.
``POST /api/activations`` — ``{text, layer, state, unit}`` -> one unit's values and the top-5 next characters.
``POST /api/units`` — ``{text}`` (or ``{}``: the model's own sample) -> units ranked against text features.

Every error is JSON ``{"error": "what — what to do"}`` with a 4xx status (503 when the queue is full). Model calls
run in worker threads, at most ``Limits.workers`` at once, so the event loop always answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from importlib import resources
from pathlib import Path

from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from rnnkit.checkpoint import load_run
from rnnkit.errors import RnnkitError
from rnnkit.web.service import Busy, Generation, Limits, Service

log = logging.getLogger("rnnkit.web")
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {  # the page loads nothing from elsewhere and runs no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateBody(_Body):
    prompt: str = ""
    length: int = 300
    temperature: float = Field(0.8, allow_inf_nan=False)
    top_k: int | None = None
    top_p: float | None = Field(None, allow_inf_nan=False)
    seed: int | None = None
    stream: bool = True


class ActivationsBody(_Body):
    text: str
    layer: int | None = None
    state: str = "h"
    unit: int = 0


class UnitsBody(_Body):
    text: str | None = None


def create_app(run_dir: Path, weights: str = "best", device="cpu", limits: Limits | None = None) -> FastAPI:
    """Load the run once and build the app around it."""
    model, vocab, config = load_run(run_dir, weights, device)
    return build_app(Service(model, vocab, config, Path(run_dir).resolve().name, limits or Limits()))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def build_app(service: Service) -> FastAPI:
    app = FastAPI(title="rnnkit", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = CapacityLimiter(service.limits.workers)
    files = resources.files("rnnkit.web") / "static"
    pages = {name: (files / name).read_bytes() for name in STATIC}

    @app.exception_handler(RnnkitError)
    async def _user_error(request: Request, exc: RnnkitError):
        return _error(503 if isinstance(exc, Busy) else 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(422, "the body is not valid JSON — send one JSON object")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid')} — send one JSON object; GET /api/info "
                           "lists the fields and their limits")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        hint = {404: " — the page is at /, the API under /api/", 405: " — see the method each /api/ route takes"}
        return _error(exc.status_code, f"{exc.detail}{hint.get(exc.status_code, '')}")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("request failed")
        return _error(500, "internal error — the server logged it; the server keeps running")

    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body)

    def admit() -> None:
        stats = limiter.statistics()
        if stats.borrowed_tokens >= limiter.total_tokens and stats.tasks_waiting >= service.limits.max_waiting:
            raise Busy(f"{stats.tasks_waiting} requests are waiting for the model — retry in a few seconds")

    async def in_worker(fn, *args):
        admit()
        return await to_thread.run_sync(fn, *args, limiter=limiter)

    @app.get("/")
    async def index():
        return Response(pages["index.html"], media_type=STATIC["index.html"], headers=HEADERS)

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC or name == "index.html":
            raise HTTPException(404, f"no static file {name!r}")
        return Response(pages[name], media_type=STATIC[name], headers=HEADERS)

    @app.get("/api/info")
    async def info():
        return service.info()

    @app.post("/api/generate")
    async def generate(body: GenerateBody):
        job = service.generation(body.prompt, body.length, body.temperature, body.top_k, body.top_p, body.seed)
        if not body.stream:
            text = await in_worker(service.run, job)
            return {"seed": job.seed, "prompt": job.prompt, "text": text}
        admit()
        return StreamingResponse(_stream(service, job, limiter), media_type="application/x-ndjson",
                                 headers={**HEADERS, "Cache-Control": "no-store"})

    @app.post("/api/activations")
    async def activations(body: ActivationsBody):
        return await in_worker(service.activations, body.text, body.layer, body.state, body.unit)

    @app.post("/api/units")
    async def units(body: UnitsBody):
        return await in_worker(service.units, body.text)

    return app


class _Stopped(Exception):
    """Raised inside the sampling loop when the client has gone: generation ends early."""


_END = object()
_workers: set[asyncio.Future] = set()


async def _stream(service: Service, job: Generation, limiter: CapacityLimiter):
    """NDJSON lines as the worker thread samples: each character crosses to the event loop as soon as
    ``generate`` hands it over (at once on torch's path; in runs of up to ``NATIVE_CHUNK`` from the kernels)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            stop.set()

    def on_char(ch: str) -> None:
        if stop.is_set():
            raise _Stopped
        put(ch)

    def work() -> None:
        try:
            service.run(job, on_char)
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 — reported in the stream, logged, never fatal
            log.exception("generation failed")
            put(exc)
        finally:
            put(_END)

    worker = asyncio.ensure_future(to_thread.run_sync(work, limiter=limiter))
    _workers.add(worker)  # the loop keeps only weak references to tasks
    worker.add_done_callback(_workers.discard)
    try:
        yield _line({"seed": job.seed, "prompt": job.prompt})
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                yield _line({"error": "generation failed — the server logged it; try again"})
            else:
                yield _line({"text": item})
        yield _line({"done": True})
    finally:
        stop.set()  # a client that left stops the sampling at its next character


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it is parsed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_big = _error(413, f"the request body is over {self.max_bytes} bytes — send less text")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await too_big(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body that grew past the limit
                raise HTTPException(413, f"the request body is over {self.max_bytes} bytes — send less text")
            return message

        await self.app(scope, limited_receive, send)
