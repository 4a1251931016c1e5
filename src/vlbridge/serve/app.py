"""The FastAPI app: OpenAI chat completions (plain and streamed), models, health, and the web demo at ``/``.

``create_app(model, config)`` owns one ``Scheduler`` (the engine thread), started and stopped with the app.
A request is checked and its images decoded on a worker thread (never on the event loop), then queued;
the handler waits for its events and gives up its row when the client disconnects. Every refusal is a
4xx in OpenAI's error shape; an unexpected failure is a 500 in the same shape, without a traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inference import Predictor, Query
from .answers import extension
from .config import ServeConfig
from .conversation import to_turns
from .errors import APIError, bad_request
from .image_outputs import data_url
from .images import load_request_image
from .job import Job, Outcome
from .model_card import model_card
from .scheduler import Scheduler
from .schema import ChatRequest, chunk, completion, new_id, usage

WEB = Path(__file__).parent / "web"
log = logging.getLogger("vlbridge.serve")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}", None
    param = ".".join(loc) or None
    return (f"{param}: {err.get('msg')}" if param else str(err.get("msg"))), param


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body is already read, so only a disconnect arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _content(outcome: Outcome):
    """The message content: the text, or text and image parts when the answer generated images."""
    if not outcome.images:
        return outcome.text
    parts = [{"type": "text", "text": outcome.text}] if outcome.text else []
    return parts + [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in outcome.images]


def create_app(model, config: ServeConfig | None = None) -> FastAPI:
    cfg = config or ServeConfig()
    predictor = Predictor(model)                       # its encode(): chat template + image transform
    scheduler = Scheduler(model, cfg.max_batch)
    context = model.cfg.llm.max_length
    max_prompt = min(cfg.max_prompt_tokens or context, context)
    per_sample = model.connector.images_per_sample               # e.g. region tokens index one image's regions
    one_image = per_sample == 1
    max_images = min(cfg.images.max_images, per_sample) if per_sample else cfg.images.max_images
    card = model_card(model, cfg.model_name, max_images)
    default_cfg_scale = cfg.cfg_scale if cfg.cfg_scale is not None else getattr(scheduler.writer, "cfg_scale", 1.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(title="vlbridge", description="OpenAI-compatible chat completions for a vlbridge model",
                  lifespan=lifespan)
    app.state.scheduler, app.state.config = scheduler, cfg

    # ---- errors in OpenAI's shape ---------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(bad_request(message, param, "invalid_request").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(APIError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return JSONResponse(APIError(500, f"internal error ({type(exc).__name__})").body(), status_code=500)

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.body_limit():
            err = APIError(413, f"request body of {length} bytes is over the limit of {cfg.body_limit()}",
                           None, "request_too_large")
            return JSONResponse(err.body(), status_code=413)
        return await call_next(request)

    # ---- requests --------------------------------------------------------------------------------------
    def prepare(body: ChatRequest):
        """On a worker thread: turns, images (fetched and decoded safely), token ids, length checks."""
        turns, refs = to_turns(body.messages)
        if len(refs) > max_images:
            why = " (region tokens index the regions of one image)" if one_image else ""
            raise bad_request(f"{len(refs)} images in one request; this server takes at most {max_images}{why}",
                              "messages", "too_many_images")
        images = [load_request_image(r.url, cfg.images, r.param) for r in refs]
        ids, pixels = predictor.encode(Query(turns, images))
        positions = len(ids) + len(images) * (model.visual_tokens_per_image() - 1)
        if positions > max_prompt:
            raise bad_request(f"the prompt takes {positions} tokens ({len(images)} images of "
                              f"{model.visual_tokens_per_image()}), more than the limit of {max_prompt}",
                              "messages", "context_length_exceeded")
        asked = body.max_completion_tokens or body.max_tokens
        room = context - positions
        if asked is not None and asked > room:
            raise bad_request(f"max_tokens {asked} + a prompt of {positions} tokens exceed the model's context of "
                              f"{context}", "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
                              "context_length_exceeded")
        if room < 1:
            raise bad_request(f"a prompt of {positions} tokens leaves no room in the context of {context}",
                              "messages", "context_length_exceeded")
        return ids.tolist(), pixels, min(asked or cfg.default_max_tokens, room)

    def check(body: ChatRequest) -> None:
        if body.model != cfg.model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves {cfg.model_name!r}",
                           "model", "model_not_found")
        if body.n not in (None, 1):
            raise bad_request(f"n={body.n}: this server returns one choice per request (n=1)", "n", "unsupported_value")
        if len(body.stop_strings()) > 4:
            raise bad_request("at most 4 stop sequences", "stop", "invalid_value")
        task_type = body.vlbridge.task_type if body.vlbridge else None
        if task_type is not None:
            if model.connector.task_types([None]) is None:
                raise bad_request("task_type: this model does not route by task type", "vlbridge.task_type",
                                  "unsupported_value")
            try:
                with model.routing(types=[task_type]):
                    pass
            except ValueError as e:
                raise bad_request(f"task_type: {e}", "vlbridge.task_type", "invalid_value") from None

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check(body)
        ids, pixels, max_new = await run_in_threadpool(prepare, body)
        temperature = cfg.default_temperature if body.temperature is None else body.temperature
        cfg_scale = body.vlbridge.cfg_scale if body.vlbridge and body.vlbridge.cfg_scale else default_cfg_scale
        job = Job(ids, pixels, max_new, temperature, body.top_p or 1.0, body.seed, body.stop_strings(), cfg_scale,
                  asyncio.get_running_loop(), deltas=bool(body.stream),
                  ignore_eos=bool(body.vlbridge and body.vlbridge.ignore_eos),
                  task_type=body.vlbridge.task_type if body.vlbridge else None)
        scheduler.submit(job)
        cid = new_id()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_events(job, cid, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        outcome = await _outcome(job, request)
        if outcome is None:                      # the client left; nobody reads this
            return JSONResponse(APIError(499, "client closed the request").body(), status_code=499)
        return completion(cid, cfg.model_name, _content(outcome), outcome.finish_reason,
                          usage(outcome.prompt_tokens, outcome.completion_tokens), extension(outcome.text))

    async def _outcome(job: Job, request: Request) -> Outcome | None:
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                event = asyncio.ensure_future(job.events.get())
                await asyncio.wait({event, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    return None
                kind, value = event.result()
                if kind == "done":
                    return value
                if kind == "error":
                    raise _as_api_error(value)
        finally:
            gone.cancel()
            job.cancel()                         # no-op when finished; frees the row otherwise

    def _sse(obj: dict) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    async def _events(job: Job, cid: str, include_usage: bool):
        name = cfg.model_name
        try:
            yield _sse(chunk(cid, name, {"role": "assistant", "content": ""}, with_usage_field=include_usage))
            while True:
                kind, value = await job.events.get()
                if kind == "delta":
                    yield _sse(chunk(cid, name, {"content": value}, with_usage_field=include_usage))
                elif kind == "error":
                    yield _sse(_as_api_error(value).body())
                    break
                else:
                    delta = {}
                    if value.images:
                        delta["content"] = [p for p in _content(value) if p["type"] == "image_url"]
                    ext = extension(value.text)
                    if ext:
                        delta["vlbridge"] = ext
                    yield _sse(chunk(cid, name, delta, value.finish_reason, with_usage_field=include_usage))
                    if include_usage:
                        last = chunk(cid, name, {}, None, usage(value.prompt_tokens, value.completion_tokens), True)
                        last["choices"] = []
                        yield _sse(last)
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    # ---- models, health, the demo ------------------------------------------------------------------------
    def model_entry() -> dict:
        return {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "vlbridge", "vlbridge": card}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        if model_id != cfg.model_name:
            raise APIError(404, f"the model {model_id!r} does not exist", "model", "model_not_found")
        return model_entry()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": cfg.model_name, "running": scheduler.running,
                "waiting": len(scheduler.waiting)}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def _as_api_error(error: Exception) -> APIError:
    if isinstance(error, APIError):
        return error
    log.error("generation failed: %s: %s", type(error).__name__, error)
    return APIError(500, f"generation failed ({type(error).__name__}: {error})")
