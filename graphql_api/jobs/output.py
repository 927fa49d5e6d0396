"""Results in OpenAI's batch output format, one JSON object per line:
``{"id", "custom_id", "response": {"status_code", "request_id", "body": <chat.completion>}, "error"}``;
an item that ended in error has ``response: null`` and ``error: {"code", "message", "param"}``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from inference.service.wire import ChatCompletion

from .store import ItemResult, JobStore


def output_line(job_id: str, r: ItemResult, model: str) -> str:
    request_id = f"{job_id}-{r.idx}"
    line: dict[str, object] = {"id": f"batch_req_{request_id}", "custom_id": r.custom_id}
    error = r.result.error
    if error is None:
        body = ChatCompletion.of(r.result.completion(request_id), model).model_dump(exclude_none=True)
        line |= {"response": {"status_code": 200, "request_id": request_id, "body": body}, "error": None}
    else:
        line |= {"response": None, "error": {"code": error.code, "message": error.message, "param": error.field}}
    return json.dumps(line, ensure_ascii=False) + "\n"


async def output_lines(store: JobStore, job_id: str, model: str) -> AsyncIterator[str]:
    """Every ended item of the job, in input order, read from the store a page at a time."""
    async for r in store.all_results(job_id):
        yield output_line(job_id, r, model)
