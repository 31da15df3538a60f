"""The HTTP service (FastAPI): recommendations for new histories and known users, appended events, the model
card, health, Prometheus metrics, model reload without downtime, and the page (see docs/service.md).

Every error is a JSON body ``{"error": {"status", "message", "field", "problems": [{"field", "problem"}]}}``
naming the field at fault; no request reaches the worker unvalidated, and the worker survives anything a
request carries (an unexpected failure answers 500 for that request only, and is logged).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from fastapi import FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqrec.errors import DataError, SeqrecError
from seqrec.service.engine import Batcher, Job, Ranked, Served
from seqrec.service.options import ServeOptions
from seqrec.service.store import EventStore
from seqrec.version import __version__

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def _item_id(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"an item id is an integer or a string, got {type(value).__name__} {value!r}"[:200])
    return value


ItemId = Annotated[int | str, BeforeValidator(_item_id)]


# ---- request and response bodies (they are also the OpenAPI documentation at /docs) -----------------
class Ranking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: StrictInt = Field(10, gt=0, description="how many items to return (clamped to the catalogue size)")
    exclude_seen: StrictBool = Field(True, description="leave the history's items out of the results")
    items: list[ItemId] | None = Field(None, min_length=1, description="only rank these candidate items")
    metadata: StrictBool = Field(False, description="add each item's metadata (with --items)")


class RecommendRequest(Ranking):
    history: list[ItemId] = Field(..., min_length=1, description="item ids, oldest first")


class BatchRequest(Ranking):
    histories: list[list[ItemId]] = Field(..., min_length=1, description="one list of item ids per history")


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemId] = Field(..., min_length=1, description="item ids, oldest first")
    timestamps: list[float] | None = Field(None, description="one per item (default: the time received)")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_dir: StrictStr | None = Field(None, description="run directory to serve (default: the one served now)")


class Recommendation(BaseModel):
    items: list[ItemId]
    scores: list[float]
    k: int = Field(description="items returned (fewer than asked when fewer candidates remain)")
    unknown_items: list[ItemId] = Field(description="history items the model does not know, ignored")
    truncated: int = Field(description="history items older than the model's window: not read by the model "
                                       "(still left out of the results with exclude_seen)")
    history_length: int
    warnings: list[str]
    model: str
    metadata: list[dict] | None = Field(None, description="each item's metadata (with metadata: true)")
    history_metadata: list[dict] | None = Field(None, description="each history item's metadata (single "
                                                                  "requests with metadata: true)")


class BatchRecommendation(BaseModel):
    results: list[Recommendation]
    model: str


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def error_body(status: int, message: str, field: str | None = None, problems: list | None = None) -> dict:
    return {"error": {"status": status, "message": message, "field": field,
                      "problems": problems if problems is not None else ([{"field": field, "problem": message}]
                                                                          if field else [])}}


def error_response(status: int, message: str, field: str | None = None, problems=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, field, problems), status_code=status)


def dumps(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(), status_code=status,
                    media_type="application/json")


# ---- item metadata -------------------------------------------------------------------------------
class Catalogue:
    """Item metadata from ``--items`` (id -> columns) for the page: lookup and search."""

    def __init__(self, path: str | None, item_ids: np.ndarray):
        self.columns: list[str] = []
        self.title: str | None = None
        self.rows: dict[str, dict] = {}
        known = pd.Series([str(i) for i in item_ids.tolist()])
        if path:
            frame = _read_table(Path(path))
            id_column = "item_id" if "item_id" in frame.columns else frame.columns[0]
            frame = frame.rename(columns={id_column: "item_id"})
            frame["item_id"] = frame["item_id"].astype(str)
            duplicated = frame["item_id"].duplicated()
            if duplicated.any():
                raise DataError(f"{path}: item id {frame['item_id'][duplicated].iloc[0]!r} appears more than once "
                                f"({int(duplicated.sum())} repeated rows)")
            self.columns = [c for c in frame.columns if c != "item_id"]
            titles = [c for c in self.columns if "title" in c.lower()] or [c for c in self.columns if "name" in c.lower()]
            self.title = titles[0] if titles else None
            clean = frame.astype(object).where(frame.notna(), None)
            self.rows = {row["item_id"]: row for row in clean.to_dict("records")}
            matched = int(known.isin(frame["item_id"]).sum())
            log.info("%s: metadata of %d items, %d of the model's %d items", path, len(frame), matched, len(known))
        self.ids = known
        self.search_text = (known + " " + known.map(lambda i: str(self.rows.get(i, {}).get(self.title, "")))
                            ).str.lower() if self.title else known.str.lower()

    def lookup(self, items) -> list[dict]:
        return [{"item_id": item, **{k: v for k, v in self.rows.get(str(item), {}).items() if k != "item_id"}}
                for item in items]

    def search(self, query: str, limit: int, item_ids: np.ndarray) -> list[dict]:
        query = query.strip().lower()
        hits = np.flatnonzero(self.search_text.str.contains(query, regex=False).to_numpy()) if query else \
            np.arange(min(limit, len(self.ids)))
        return self.lookup(item_ids[hits[:limit]].tolist())


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such items file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep=None if path.suffix in (".tsv", ".txt") else ",", engine="python"
                           if path.suffix in (".tsv", ".txt") else "c")
    except Exception as exc:  # noqa: BLE001  (any reader error names the file)
        raise DataError(f"{path}: unreadable items file ({type(exc).__name__}: {exc})") from None


# ---- metrics and limits (plain ASGI: no per-request overhead of BaseHTTPMiddleware) ----------------------
class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("seqrec_requests", "HTTP requests", ["method", "endpoint", "status"], registry=r)
        self.latency = Histogram("seqrec_request_seconds", "HTTP request latency", ["endpoint"], registry=r,
                                 buckets=(.001, .0025, .005, .0075, .01, .025, .05, .075, .1, .25, .5, 1, 2.5, 5))
        self.batch_rows = Histogram("seqrec_batch_rows", "histories ranked per forward pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.batch_seconds = Histogram("seqrec_batch_seconds", "seconds per forward pass and ranking", registry=r,
                                       buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
        self.recommendations = Counter("seqrec_recommendations", "histories answered", registry=r)
        self.events = Counter("seqrec_events_appended", "events appended", registry=r)
        self.reloads = Counter("seqrec_reloads", "model reloads", ["outcome"], registry=r)
        self.model = Gauge("seqrec_model_info", "the model served (value: load time)", ["model", "backend"], registry=r)
        self.in_flight = Gauge("seqrec_requests_in_flight", "requests being handled", registry=r)


class BodyTooLarge(Exception):
    pass


class Guard:
    """Request counting, latency, the body-size limit (413, also for bodies without a Content-Length), and a
    last-resort 500 in the error shape should anything escape a handler."""

    def __init__(self, app, service: "Service"):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, limit = self.service, self.service.options.max_body
        service.active += 1
        service.metrics.in_flight.inc()
        started, status, sent = time.perf_counter(), [500], [False]
        received, too_large = [0], [False]

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    too_large[0] = True
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            if too_large[0]:  # the framework answered its own error for the interrupted body: replace it
                if message["type"] == "http.response.start" and not sent[0]:
                    await _send_json(watched_send_raw, 413, error_body(
                        413, f"request body larger than the limit of {limit} bytes (--max-body)", "body"))
                return
            await watched_send_raw(message)

        async def watched_send_raw(message):
            if message["type"] == "http.response.start":
                status[0], sent[0] = message["status"], True
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise BodyTooLarge
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not sent[0]:
                await _send_json(watched_send_raw, 413, error_body(
                    413, f"request body larger than the limit of {limit} bytes (--max-body)", "body"))
        except Exception:  # noqa: BLE001
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not sent[0]:
                await _send_json(watched_send_raw, 500, error_body(500, "internal error (logged by the server)"))
        finally:
            service.active -= 1
            service.metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static") else "unmatched")
            service.metrics.requests.labels(scope.get("method", ""), endpoint, str(status[0])).inc()
            service.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ---- the service ----------------------------------------------------------------------------------
class Service:
    """The state behind the routes: the served model (swapped atomically by :meth:`reload`), the event store,
    the item catalogue, the batcher and the metrics."""

    def __init__(self, run_dir, options: ServeOptions):
        self.options = options
        if options.threads:
            torch.set_num_threads(options.threads)
        self.served = Served.load(run_dir, options.backend, options.threads)
        state = Path(options.state) if options.state else Path(str(Path(run_dir).resolve()) + ".events.sqlite")
        self.store = EventStore(state, options.sync)
        self.catalogue = Catalogue(options.items or None, self.served.model.vocab_.items)
        self.metrics = Metrics()
        self.metrics.model.labels(self.served.model_id, options.backend).set(self.served.loaded_at)
        self.active = 0
        self.batcher: Batcher | None = None
        self.reload_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        _freeze()
        self.reload_lock = asyncio.Lock()
        self.batcher = Batcher(lambda: self.served, self.options.max_batch, self.options.max_wait_ms / 1000,
                               lambda: self.active, self.options.threads or torch.get_num_threads())
        self.batcher.observe = self._observe
        self.batcher.start()

    def _observe(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.recommendations.inc(rows)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.store.close()

    async def reload(self, run_dir=None) -> Served:
        """Load ``run_dir`` (default: the one served now) beside the served model and swap them: requests
        in flight finish on the old model, later batches run on the new one. A run directory that does not
        load (or cannot rank) raises and leaves the old model serving."""
        async with self.reload_lock:
            target = Path(run_dir) if run_dir else self.served.run_dir
            try:
                fresh = await asyncio.to_thread(Served.load, target, self.options.backend, self.options.threads)
            except Exception:
                self.metrics.reloads.labels("refused").inc()
                raise
            old, self.served = self.served, fresh
            self.catalogue = Catalogue(self.options.items or None, fresh.model.vocab_.items) \
                if not np.array_equal(old.model.vocab_.items, fresh.model.vocab_.items) else self.catalogue
            self.metrics.model.remove(old.model_id, self.options.backend)
            self.metrics.model.labels(fresh.model_id, self.options.backend).set(fresh.loaded_at)
            self.metrics.reloads.labels("ok").inc()
            log.info("reloaded: %s (%s) replaces %s", fresh.model_id, fresh.run_dir, old.model_id)
            del old
            _freeze()
            return fresh

    # ---- requests -------------------------------------------------------------------------------
    def check_ranking(self, body: Ranking) -> None:
        if body.k > self.options.max_k:
            raise ApiError(422, f"k is {body.k}, more than the limit of {self.options.max_k} (--max-k)", "k")

    def check_history(self, history: list, field: str) -> None:
        if len(history) > self.options.max_history:
            raise ApiError(422, f"{len(history)} items, more than the limit of {self.options.max_history} "
                                "(--max-history)", field)

    def known_user(self, user_id: str) -> tuple[int, list]:
        """(the served model's index of the user, or -1; the user's appended events); 404 for neither."""
        index = self.served.user_index.get(user_id, -1)
        appended = self.store.events(user_id)
        if index < 0 and not appended:
            raise ApiError(404, f"unknown user {user_id!r}: not among the model's users and no events appended",
                           "user_id")
        return index, appended

    def user_job(self, user_id: str, k: int, exclude_seen: bool) -> Job:
        _, appended = self.known_user(user_id)
        return Job([appended], k, exclude_seen, users=[user_id])

    def answer(self, ranked: Ranked, row: int, k: int, metadata: bool, history: list | None = None) -> dict:
        served = ranked.served
        ids = served.model.vocab_.decode_items(ranked.ids[row]).tolist()
        warnings = []
        if k > served.model.vocab_.n_items:
            warnings.append(f"k={k} is more than the {served.model.vocab_.n_items} items of the catalogue: "
                            "clamped to it")
        if ranked.lengths[row] == 0:
            warnings.append("no item of the history is known to the model: the ranking reads an empty history")
        if ranked.truncated[row]:
            warnings.append(f"the model reads the last {served.max_len} items; {ranked.truncated[row]} older ones "
                            "were not read")
        payload = {"items": ids, "scores": ranked.scores[row].tolist(), "k": len(ids),
                   "unknown_items": ranked.unknown[row], "truncated": ranked.truncated[row],
                   "history_length": ranked.lengths[row], "warnings": warnings, "model": served.model_id}
        if metadata:
            payload["metadata"] = self.catalogue.lookup(ids)
            if history is not None:
                payload["history_metadata"] = self.catalogue.lookup(history)
        return payload

    async def run(self, job: Job) -> Ranked:
        try:
            return await self.batcher.submit(job)
        except SeqrecError as exc:
            raise ApiError(422, str(exc), "items" if "candidate" in str(exc) else None) from None


def create_app(run_dir, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI application serving ``run_dir`` (loaded now: a broken run directory fails here)."""
    options = options or ServeOptions()
    options.validate()
    service = Service(run_dir, options)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_sighup(service)))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
            log.info("SIGHUP reload unavailable in this process")
        yield
        await service.stop()

    app = FastAPI(title="seqrec", version=__version__, lifespan=lifespan,
                  description="Sequential recommendations from a seqrec run directory. Errors are "
                              '`{"error": {"status", "message", "field", "problems"}}`.')
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # loc is ("body", position)
                problems.append({"field": "body", "problem": f"invalid JSON at character {e['loc'][-1]}"})
                continue
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path")]
            problems.append({"field": ".".join(loc) or "body", "problem": e.get("msg", "invalid")})
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error_response(422, message, problems[0]["field"] if problems else None, problems)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz():
        """A model is loaded and the batcher runs."""
        ready = service.batcher is not None and service.batcher.task is not None and not service.batcher.task.done()
        if not ready:
            return error_response(503, "not ready")
        return {"status": "ready", "model": service.served.model_id}

    @app.get("/metrics", tags=["operations"])
    async def metrics():
        """Prometheus metrics: requests by endpoint and status, latency histograms, batch sizes, reloads."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", tags=["model"])
    async def model_card():
        """The model card: name, options, training data and its fingerprint, protocol card and test metrics."""
        served = service.served
        users, events = service.store.counts()
        return dumps({"id": served.model_id, "backend": served.backend, "loaded_at": served.loaded_at,
                      **served.card, "metadata_columns": service.catalogue.columns,
                      "title_column": service.catalogue.title,
                      "appended": {"users": users, "events": events, "store": str(service.store.path)},
                      "limits": {k: getattr(options, k) for k in ("max_k", "max_batch", "max_histories", "max_history",
                                                                   "max_events", "max_body")}})

    @app.post("/v1/recommend", response_model=Recommendation, tags=["recommend"])
    async def recommend(body: RecommendRequest):
        """Top-k for one history of item ids (oldest first); concurrent requests share forward passes."""
        service.check_ranking(body)
        service.check_history(body.history, "history")
        ranked = await service.run(Job([body.history], body.k, body.exclude_seen, _candidates(body.items)))
        return dumps(service.answer(ranked, 0, body.k, body.metadata, body.history))

    @app.post("/v1/recommend/batch", response_model=BatchRecommendation, tags=["recommend"])
    async def recommend_batch(body: BatchRequest):
        """Top-k for many histories, ranked in one forward pass."""
        service.check_ranking(body)
        if len(body.histories) > options.max_histories:
            raise ApiError(422, f"{len(body.histories)} histories, more than the limit of {options.max_histories} "
                                "(--max-histories)", "histories")
        for i, history in enumerate(body.histories):
            if not history:
                raise ApiError(422, "an empty history: give at least one item", f"histories.{i}")
            service.check_history(history, f"histories.{i}")
        ranked = await service.run(Job(body.histories, body.k, body.exclude_seen, _candidates(body.items)))
        return dumps({"results": [service.answer(ranked, r, body.k, body.metadata) for r in range(len(body.histories))],
                      "model": ranked.served.model_id})

    @app.get("/v1/users", tags=["users"])
    async def users(q: Annotated[str, Query(max_length=200)] = "",
                    limit: Annotated[int, Query(gt=0, le=1000)] = 20):
        """Known user ids starting with ``q`` (the model's users, then users with appended events)."""
        served = service.served
        found = [u for u in served.user_index if u.startswith(q)][:limit]
        if len(found) < limit:
            found += [u for u in service.store.users() if u.startswith(q) and u not in served.user_index][:limit - len(found)]
        return {"users": found}

    @app.get("/v1/users/{user_id}", tags=["users"])
    async def user(user_id: Annotated[str, PathParam(max_length=500)], metadata: bool = False):
        """A user's history: the model's stored events, then those appended through the service."""
        served = service.served
        index, appended = service.known_user(user_id)
        known = served.model.histories_
        stored = served.model.vocab_.decode_items(known.items[known.offsets[index]:known.offsets[index + 1]]).tolist() \
            if index >= 0 else []
        payload = {"user_id": user_id, "history": stored + appended, "stored": len(stored), "appended": len(appended)}
        if metadata:
            payload["metadata"] = service.catalogue.lookup(payload["history"])
        return dumps(payload)

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendation, tags=["users"])
    async def user_recommendations(user_id: Annotated[str, PathParam(max_length=500)],
                                   k: Annotated[int, Query(gt=0)] = 10, exclude_seen: bool = True,
                                   metadata: bool = False):
        """Top-k for a known user: the model's stored history plus the events appended since."""
        if k > options.max_k:
            raise ApiError(422, f"k is {k}, more than the limit of {options.max_k} (--max-k)", "k")
        ranked = await service.run(service.user_job(user_id, k, exclude_seen))
        return dumps(service.answer(ranked, 0, k, metadata))

    @app.post("/v1/users/{user_id}/events", tags=["users"])
    def append_events(user_id: Annotated[str, PathParam(max_length=500)], body: EventsRequest):
        """Append events to a user's history (a new user id starts one); durable when this answers. The next
        recommendation for the user reads them, without retraining."""
        if len(body.items) > options.max_events:
            raise ApiError(422, f"{len(body.items)} events, more than the limit of {options.max_events} "
                                "(--max-events)", "items")
        if body.timestamps is not None and len(body.timestamps) != len(body.items):
            raise ApiError(422, f"{len(body.timestamps)} timestamps for {len(body.items)} items", "timestamps")
        total = service.store.append(user_id, body.items, body.timestamps)
        service.metrics.events.inc(len(body.items))
        unknown = service.served.model.encode_histories([body.items])[1][0]
        return {"user_id": user_id, "appended": len(body.items), "appended_total": total, "unknown_items": unknown,
                "known_user": user_id in service.served.user_index}

    @app.get("/v1/items", tags=["items"])
    async def items(q: Annotated[str, Query(max_length=200)] = "", limit: Annotated[int, Query(gt=0, le=1000)] = 20):
        """Items whose id or title contains ``q`` (titles with --items), with their metadata."""
        return {"items": service.catalogue.search(q, limit, service.served.model.vocab_.items)}

    @app.post("/v1/admin/reload", tags=["operations"])
    async def reload(body: ReloadRequest | None = None,
                     authorization: Annotated[str | None, Header()] = None):
        """Serve another run directory (or re-read the current one) without downtime. Needs
        ``Authorization: Bearer <token>`` with the token in the environment variable --admin-token-env."""
        token = os.environ.get(options.admin_token_env, "")
        if not token:
            raise ApiError(403, f"admin calls are disabled: set the environment variable {options.admin_token_env} "
                                "before starting the server (or reload with SIGHUP)", "authorization")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or wrong admin token (Authorization: Bearer <token>)", "authorization")
        try:
            fresh = await service.reload(body.run_dir if body else None)
        except Exception as exc:  # noqa: BLE001  (whatever a run directory does to the loader, the old one serves)
            detail = str(exc) if isinstance(exc, SeqrecError) else f"{type(exc).__name__}: {exc}"
            raise ApiError(422, f"reload refused, the previous model keeps serving: {detail}", "run_dir") from None
        return {"model": fresh.model_id, "run_dir": str(fresh.run_dir), "loaded_at": fresh.loaded_at}

    app.add_middleware(Guard, service=service)
    return app


def _freeze() -> None:
    """Move the objects alive now (the model, its vocabulary and user dictionaries) out of the garbage
    collector's sight: a full collection no longer walks them, which otherwise pauses every request in
    flight for tens of milliseconds. Unfrozen and collected first, so a replaced model's cycles are freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _candidates(items) -> tuple | None:
    return None if items is None else tuple(items)


async def _sighup(service: Service) -> None:
    try:
        await service.reload()
    except Exception as exc:  # noqa: BLE001  (a signal has no caller to answer: log it)
        log.error("SIGHUP reload refused, the previous model keeps serving: %s", exc)
