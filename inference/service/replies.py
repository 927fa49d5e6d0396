"""How the service reads a body and answers: JSON bodies, and errors in OpenAI's shape."""

from __future__ import annotations

import json

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..boundary import EngineError, InvalidRequest
from .wire import HTTP_STATUS, ErrorBody, ErrorResponse


def reply(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status_code)


def error_response(exc: EngineError) -> JSONResponse:
    return reply(ErrorResponse(error=ErrorBody.of(exc)), HTTP_STATUS.get(exc.code, 500))


async def json_body(request: Request) -> object:
    """The body as a JSON object; raises InvalidRequest (``body``) for anything else."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {str(exc) or type(exc).__name__}", field="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object", field="body")
    return body
