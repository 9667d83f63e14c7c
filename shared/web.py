"""What every Rapport HTTP service has: health, readiness, operational metrics, errors."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import orjson
from fastapi import APIRouter, FastAPI, Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import InvalidInput, NotFound, RapportError, Unavailable

MAX_BODY_BYTES = 2 << 20
RETRY_AFTER_S = "5"


class FieldError(BaseModel):
    field: str  # dotted path into the body, or the parameter's name
    reason: str


class ErrorOut(BaseModel):
    """Every error answer: a code, a sentence, and for 422 the fields at fault."""

    error: str
    message: str
    errors: list[FieldError] | None = None


_MEANING = {
    401: "Missing or invalid API key.",
    403: "The API key lacks the scope this endpoint needs.",
    404: "What the path names does not exist.",
    413: "The request body is over 2 MiB.",
    422: "Invalid input: every field at fault is named.",
    429: "Past the key's rate limit, or too many invalid keys from this address: see Retry-After.",
    503: "A dependency is missing (error: broker_unavailable, not_ready or smtp_unavailable): "
    "nothing was done; retry after Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error answers in the shared format."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}


# What a write endpoint can answer besides success.
WRITE_ERRORS = errors(401, 403, 413, 422, 429, 503)


class HttpMetrics:
    """Request rate and latency per route (operational, not culture, metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "rapport_http_requests",
            "HTTP requests handled, by route and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "rapport_http_request_duration_seconds",
            "HTTP request latency in seconds, by route.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.publish_failures = Counter(
            "rapport_publish_failures",
            "Requests answered 503 because the broker did not acknowledge.",
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one request. The labelled series are kept per route, method
        and status (a few dozen), not looked up again on each request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.latency.labels(route, method),
                        self.requests.labels(route, method, str(status)))  # fmt: skip
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()
        if status == 503 and method != "GET":
            self.publish_failures.inc()


class Measure:
    """Count and time every request by route (pure ASGI: no per-request task or copy)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router records the matched route in the scope it was given.
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - start)


class BodyLimit:
    """Answer 413 to bodies over the limit, however they are sent.

    A declared length is checked before anything is read (the server never reads past
    it); a body without one (chunked) is read up to the limit first, then handed on.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", f"request body exceeds {limit} bytes")


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "body"]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" and ": " in reason:
            # Model-level rules say "field: reason"; report them on that field.
            name, reason = reason.split(": ", 1)
            loc.append(name)
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        field = ".".join(loc) or "body"
        errors.append({"field": field, "reason": reason})
    message = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return _error(422, "invalid_request", message, errors=errors)


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 429: "rate_limited"}  # fmt: skip


def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    response = _error(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RapportError)
    if isinstance(exc, InvalidInput):
        errors = [{"field": exc.field, "reason": exc.reason}]
        return _error(422, "invalid_request", str(exc), errors=errors)
    if isinstance(exc, NotFound):
        return _error(404, "not_found", str(exc))
    if isinstance(exc, Unavailable):
        response = _error(503, exc.code, exc.public())
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response
    return _error(exc.status, "error", str(exc))


class DirectRoute(APIRoute):
    """A route FastAPI documents from its endpoint's signature, as any route, and this
    class serves without FastAPI's per-request dependency solving.

    In FastAPI 0.165 that solving costs a POST /v1/recognitions about as much as a bare
    endpoint's whole request (it inspects every dependency again on each request). Here
    the endpoint's parameters are read once, when the route is added, into a plan:

    - ``Request``: the request;
    - ``Depends(f)``, ``f`` an ``async def`` of the request alone: awaited, first, in
      order (so a 401 comes before a 422, as in FastAPI);
    - ``Header(...)`` and path parameters: validated with their constraints;
    - one pydantic model, the body: parsed by orjson (``NaN`` and other non-JSON are
      refused, where the standard library would read them), validated as FastAPI does.

    Field errors of all of them make one 422, as FastAPI's would. The return value is
    serialized as the route's ``response_model``. Any other kind of parameter or route
    option is refused when the route is added (``TypeError``): nothing is served
    differently from what OpenAPI says.

    The handler is also the route's whole ASGI app (``self.app``, which FastAPI sets to
    its ``request_response`` wrapper): that wrapper opens two exit stacks a request for
    dependencies with ``yield``, which a direct route has none of; errors go to the
    app's exception handlers as from any route. ``tests/unit/test_web.py`` compares its
    answers with FastAPI's own handler's for the same routes and requests, and fails
    when an upgrade makes them differ.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handle = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        options = {
            "dependencies": bool(self.dependencies),
            "response_class": not isinstance(self.response_class, DefaultPlaceholder),
            "response_model_include": self.response_model_include is not None,
            "response_model_exclude": self.response_model_exclude is not None,
            "response_model_by_alias": not self.response_model_by_alias,
            "response_model_exclude_unset": self.response_model_exclude_unset,
            "response_model_exclude_defaults": self.response_model_exclude_defaults,
            "response_model_exclude_none": self.response_model_exclude_none,
        }
        if unserved := [name for name, given in options.items() if given]:
            raise TypeError(f"{self.path}: DirectRoute does not serve {unserved}")
        call = self.endpoint
        hints = get_type_hints(call, include_extras=True)
        plan = [_Param.of(name, hints[name], p.default, self.param_convertors)
                for name, p in inspect.signature(call).parameters.items()]  # fmt: skip
        requests = [p.name for p in plan if p.request]
        depends = [p for p in plan if p.depends is not None]
        params = [p for p in plan if p.adapter is not None]
        bodies = [p for p in plan if p.body is not None]
        if len(bodies) > 1:
            raise TypeError(f"{self.path}: DirectRoute reads one body model, not {len(bodies)}")
        body = bodies[0] if bodies else None
        encode = TypeAdapter(self.response_model).dump_json if self.response_model else None
        status = self.status_code or 200

        async def handle(request: Request) -> Response:
            values: dict[str, Any] = dict.fromkeys(requests, request)
            for p in depends:
                assert p.depends is not None
                values[p.name] = await p.depends(request)
            errors: list[Any] = []
            for p in params:
                p.read(request, values, errors)
            if body is not None:
                await body.read_body(request, values, errors)
            if errors:
                raise RequestValidationError(errors)
            result = await call(**values)
            if isinstance(result, Response):
                return result
            content = encode(result, by_alias=True) if encode else orjson.dumps(result)
            return Response(content, status, media_type="application/json")

        return handle


@dataclass(slots=True)
class _Param:
    """How :class:`DirectRoute` finds one endpoint parameter in a request."""

    name: str
    request: bool = False
    depends: Callable[[Request], Awaitable[Any]] | None = None
    adapter: TypeAdapter[Any] | None = None  # a header or path parameter
    where: tuple[str, str] = ("", "")  # ("header", its name) or ("path", its name)
    default: Any = inspect.Parameter.empty
    body: type[BaseModel] | None = None

    @classmethod
    def of(cls, name: str, hint: Any, default: Any, path: Mapping[str, Any]) -> _Param:
        kind, *meta = get_args(hint) if get_origin(hint) is Annotated else (hint,)
        # Any FastAPI marking (Depends, Header, Path, Query, Body, Form...): one at most.
        marks = [m for m in meta if isinstance(m, params.Depends | FieldInfo)]
        mark = marks[0] if len(marks) == 1 else None
        if hint is Request:
            return cls(name, request=True)
        if isinstance(mark, params.Depends) and _takes_request_alone(mark.dependency):
            return cls(name, depends=mark.dependency)
        if isinstance(mark, params.Header):
            header = mark.alias or (name.replace("_", "-") if mark.convert_underscores else name)
            return cls(name, adapter=TypeAdapter(hint), where=("header", header), default=default)
        if name in path and (mark is None or isinstance(mark, params.Path)):
            return cls(name, adapter=TypeAdapter(hint), where=("path", name))
        if not marks and isinstance(kind, type) and issubclass(kind, BaseModel):
            return cls(name, body=kind)
        raise TypeError(f"DirectRoute cannot serve parameter {name!r}: {hint!r}")

    def read(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        assert self.adapter is not None
        place, key = self.where
        raw = request.headers.get(key) if place == "header" else request.path_params[key]
        if raw is None:
            if self.default is inspect.Parameter.empty:
                errors.append({"type": "missing", "loc": self.where, "msg": "Field required"})
            values[self.name] = self.default
            return
        try:
            values[self.name] = self.adapter.validate_python(raw)
        except ValidationError as exc:
            errors.extend({**e, "loc": (*self.where, *e["loc"])} for e in exc.errors())

    async def read_body(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        assert self.body is not None
        raw = await request.body()
        if not raw:
            errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
            return
        if not _is_json(request.headers.get("content-type", "")):
            reason = "the body must be JSON (Content-Type: application/json)"
            errors.append({"type": "content_type", "loc": ("body",), "msg": reason})
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append({"type": "json_invalid", "loc": ("body",), "msg": f"invalid JSON: {exc}"})
            return
        try:  # as FastAPI validates a body
            values[self.name] = self.body.model_validate(data, from_attributes=True)
        except ValidationError as exc:
            errors.extend({**e, "loc": ("body", *e["loc"])} for e in exc.errors())


def _takes_request_alone(dependency: Any) -> bool:
    """Whether ``dependency`` is an ``async def`` (or an object with one as ``__call__``)
    of one parameter, ``request``."""
    is_async = inspect.iscoroutinefunction(dependency) or (
        not inspect.isfunction(dependency)
        and inspect.iscoroutinefunction(type(dependency).__call__)
    )
    return is_async and list(inspect.signature(dependency).parameters) == ["request"]


def _is_json(content_type: str) -> bool:
    """As FastAPI reads a Content-Type: application/json, or application/*+json."""
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def serve_first(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the routes of ``routers`` in ``app``, ahead of its own (/healthz, /docs...).

    Not ``include_router``: in FastAPI 0.165, an included router is matched lazily
    through a wrapper on every request, level by level, a tenth of a POST's time here
    (the bench's single POST). A router's routes are complete as they are (their
    prefix, responses and dependencies are applied when a route is added), so they go
    straight into the app's route list. ``tests/unit/test_web.py`` fails if they stop
    being complete routes, or the app stops serving them.
    """
    app.router.routes[:0] = [route for router in routers for route in router.routes]


class Readiness(BaseModel):
    ready: bool


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    ready: Callable[[FastAPI], Awaitable[bool]],
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build a service app with /healthz, /readyz, /metrics and the shared error format."""
    # FastAPI's own OpenTelemetry off: every request is counted and timed in /metrics
    # (Prometheus); on, it looks up the global providers on each request (a tenth of a
    # POST's time here) to find none.
    off = TelemetryConfig(tracing=False, metrics=False, logs=False, operation_spans=False)
    app = FastAPI(title=title, lifespan=lifespan, telemetry=off)
    app.state.registry = registry = registry or CollectorRegistry()
    app.state.http_metrics = metrics = HttpMetrics(registry)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RapportError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    app.add_middleware(BodyLimit)
    app.add_middleware(Measure, metrics=metrics)  # outermost: 413s are counted too

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Say the process is alive."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={
            200: {"model": Readiness},
            503: {"model": Readiness, "description": "Not ready"},
        },
    )
    async def readyz() -> JSONResponse:
        """Say whether the broker is reachable and the service can take work."""
        ok = await ready(app)
        if ok:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False}, 503, {"Retry-After": RETRY_AFTER_S})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}, OPENMETRICS: {}},
                         "description": "Prometheus text, or OpenMetrics when asked"}},
    )  # fmt: skip
    async def metrics_endpoint(request: Request) -> Response:
        """Expose metrics in the Prometheus text format, or in OpenMetrics when the
        scraper's Accept header asks for it (as the aggregator's server does)."""
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=media_type)

    return app
