"""The API's plain HTTP endpoints beside GraphQL: the probes, ``/metrics`` and a job's results
file. Each finds the app's ``State`` on ``request.app.state``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from http_common.keys import ANONYMOUS

from ..jobs.output import output_lines
from ..state import State


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the model is loaded, the step loop runs, and the server is not draining. The body
    says how much of the engine's capacity is in use; a full engine is still ready (new chats
    get OVERLOADED at once), and since no request can leak its place, full means busy."""
    state = State.of(request)
    ready = state.engine.running and not state.draining
    stats, info = state.engine.stats(), state.engine.info()
    body: dict[str, object] = {"ready": ready, "loading": state.engine.loading, "draining": state.draining,
                               "running": stats.running, "waiting": stats.waiting, "capacity": info.max_running + info.max_waiting}
    if state.engine.failure:
        body["error"] = state.engine.failure
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """The API's series, then the engine's own where it has them here (an embedded engine)."""
    state = State.of(request)
    body = generate_latest(state.metrics.registry)
    engine_metrics = state.engine.metrics
    if engine_metrics is not None:
        body += generate_latest(engine_metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def job_results(request: Request) -> Response:
    """A job's results in OpenAI's batch output format, streamed from the database."""
    state = State.of(request)
    caller = request.scope.get("state", {}).get("api_key") if state.keyring is not None else ANONYMOUS
    job_id = request.path_params["job_id"]
    job = await state.jobs.store.job(job_id, caller.name) if caller is not None and state.jobs.ready else None
    if job is None:
        return JSONResponse({"error": {"code": "JOB_NOT_FOUND", "message": f"no batch job with id {job_id[:64]!r} "
                                       "(for this API key)"}}, status_code=404)
    return StreamingResponse(output_lines(state.jobs.store, job.id, state.engine.info().name),
                             media_type="application/jsonl",
                             headers={"content-disposition": f'attachment; filename="{job.id}-results.jsonl"'})
