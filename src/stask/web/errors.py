"""Every error answers ``{"success": false, "error": "<code>", "message": "<what to do>"}``.

Bad input is a 4xx naming what is wrong; an unexpected failure is a 500 that shows no
traceback and no setting (the traceback goes to the server's log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from stask.errors import StaskError

log = logging.getLogger("stask.web")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "throttled",
    500: "internal",
    503: "unavailable",
}


class ApiError(StaskError):
    """The request cannot be served."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code or CODES.get(status, "error")


class BodyTooLarge(Exception):
    """Raised from inside ``receive`` when a body streams past its limit: the app answers 413."""


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "success": False,
                "error": "not_found",
                "message": "no task has id 42",
            }
        }
    )

    success: bool
    error: str
    message: str


def error_response(status: int, message: str, code: str | None = None) -> JSONResponse:
    body = {"success": False, "error": code or CODES.get(status, "error"), "message": message}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


# Documented on every route: what any of them may answer besides success.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": CODES[status].replace("_", " ")}
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)
}


def json_error_bodies(api: FastAPI) -> None:
    """Document every error answer as the JSON ``ErrorBody`` it is: FastAPI gives an error
    response the media type of its route's success, so a file route said ``text/plain``."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = generate()
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                for status, response in operation.get("responses", {}).items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = body
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for problem in err.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


def install(api: FastAPI) -> None:
    async def stask_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StaskError)
        status = err.http_status
        if status >= 500 and not isinstance(err, ApiError):
            log.warning("%s %s: %s", request.method, request.url.path, err.message)
        if status == 500:  # a configuration problem: its wording may name settings
            return error_response(500, "stask failed on the server - see the server's log")
        if status == 503 and not isinstance(err, ApiError):  # its wording names the database
            return error_response(
                503, "the database is unreachable or refused the request - see the server's log"
            )
        return error_response(status, err.message, getattr(err, "code", None))

    async def http_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        message = err.detail if isinstance(err.detail, str) else CODES.get(err.status_code, "")
        if err.status_code == 404 and message == "Not Found":
            message = "no such route - see openapi.json for the routes"
        if err.status_code == 405:
            message = "this route does not take that method - see openapi.json"
        return error_response(err.status_code, message)

    async def invalid(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return error_response(422, _validation_message(err))

    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "stask failed on the server - see the server's log")

    json_error_bodies(api)
    api.add_exception_handler(StaskError, stask_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(Exception, unexpected)
