"""The one fast path in request handling: write routes served without FastAPI's
per-request work, for the routes where `make bench` shows it matters (the recognition
writes, ``services/recognition/api.py``). Every other route is FastAPI's own.

Why: in FastAPI 0.165, solving a route's dependencies on each request costs a single
POST /v1/recognitions about as much as a bare endpoint's whole request, and an included
router is matched through a wrapper, level by level. Measured by `make bench`
(``docs/BENCHMARKS.md``): see the README's "Where the HTTP path is fast".

Fenced: a :class:`DirectRoute` serves what is on its allow-list and refuses everything
else when the route is added (``TypeError``); an app with ``dependency_overrides`` gets
FastAPI's own handler for it. ``tests/unit/test_fastpath.py`` compares its answers and
OpenAPI with FastAPI's own route class, on the real recognition routes too, and fails
when an upgrade of FastAPI or pydantic makes them differ.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import orjson
from fastapi import APIRouter, FastAPI, Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from starlette.types import ASGIApp, Receive, Scope, Send

# Route options a DirectRoute serves whatever their value: those only OpenAPI shows, and
# the status code and response model it applies. Every other option must keep
# APIRoute's default, or the route is refused when it is added.
SERVED_OPTIONS = frozenset({
    "response_model", "status_code", "tags", "summary", "description",
    "response_description", "responses", "deprecated", "name", "methods", "operation_id",
    "include_in_schema", "callbacks", "openapi_extra", "generate_unique_id_function",
    "dependency_overrides_provider",
})  # fmt: skip
_DEFAULTS = {n: p.default for n, p in inspect.signature(APIRoute.__init__).parameters.items()}


def _plain(value: Any) -> Any:
    value = value.value if isinstance(value, DefaultPlaceholder) else value
    return None if isinstance(value, list | tuple | dict) and not value else value


def unserved(options: Mapping[str, Any]) -> list[str]:
    """The route options given that a DirectRoute does not serve."""
    return [name for name, value in options.items()
            if name not in SERVED_OPTIONS
            and (name not in _DEFAULTS or _plain(value) != _plain(_DEFAULTS[name]))]  # fmt: skip


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
    serialized as the route's ``response_model``. Any other kind of parameter, a plain
    ``def`` endpoint, or a route option not on ``SERVED_OPTIONS`` is refused when the
    route is added (``TypeError``): nothing is served differently from what OpenAPI says.

    The handler is also the route's whole ASGI app (``self.app``, which FastAPI sets to
    its ``request_response`` wrapper): that wrapper opens two exit stacks a request for
    dependencies with ``yield``, which a direct route has none of; errors go to the
    app's exception handlers as from any route.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        if refused := unserved(options):
            raise TypeError(f"{path}: DirectRoute does not serve {refused}")
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{path}: DirectRoute serves an async def endpoint only")
        super().__init__(path, endpoint, **options)
        handle = self.get_route_handler()
        standard: ASGIApp | None = None

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal standard
            if getattr(self.dependency_overrides_provider, "dependency_overrides", None):
                # Overridden dependencies: FastAPI's own handler applies them.
                standard = standard or request_response(APIRoute.get_route_handler(self))
                await standard(scope, receive, send)
                return
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
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
        data: Any = raw  # not JSON: validated as the bytes they are, as FastAPI does
        if _is_json(request.headers.get("content-type", "")):
            try:
                # In any encoding JSON allows, byte-order mark or not, as FastAPI reads a
                # body (json.loads of bytes): orjson reads UTF-8 without one.
                encoding = json.detect_encoding(raw)
                data = orjson.loads(raw if encoding == "utf-8" else raw.decode(encoding))
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                errors.append(_json_invalid(raw, exc))
                return
        try:  # as FastAPI validates a body
            values[self.name] = self.body.model_validate(data, from_attributes=True)
        except ValidationError as exc:
            errors.extend({**e, "loc": ("body", *e["loc"])} for e in exc.errors())


def _json_invalid(raw: bytes, exc: ValueError) -> dict[str, Any]:
    """The error FastAPI gives a body its JSON parser cannot read: the standard library's
    message and position. What only orjson refuses (``NaN``) keeps orjson's message."""
    try:
        json.loads(raw)
        problem, at = str(exc), 0
    except json.JSONDecodeError as std:
        problem, at = std.msg, std.pos
    except ValueError as std:  # not in any encoding JSON allows
        problem, at = str(std), 0
    return {"type": "json_invalid", "loc": ("body", at), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": problem}}  # fmt: skip


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


def serve_first(app: FastAPI, router: APIRouter) -> None:
    """Serve the direct routes of ``router`` in ``app``, ahead of every other route.

    Not ``include_router``, which in FastAPI 0.165 matches an included router through a
    wrapper on each request (a tenth of a POST's time here). A router's routes are
    complete as they are (prefix, responses and dependencies applied when a route is
    added), so they go straight into the app's route list, with the app as their
    provider of ``dependency_overrides``.
    """
    routes = [r for r in router.routes if isinstance(r, DirectRoute)]
    if len(routes) != len(router.routes):
        raise TypeError(f"{router.prefix}: serve_first serves DirectRoute routes only")
    for route in routes:
        route.dependency_overrides_provider = app
    app.router.routes[:0] = routes
