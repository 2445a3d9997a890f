"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The gateway answers and its engine has not failed for good",
            responses={503: {"description": "The engine could not be started: restart the pod"}})
async def live(request: Request):
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None and gateway.supervisor.state == "failed":
        return JSONResponse({"status": "failed", "error": gateway.supervisor.public_error or ""},
                            status_code=503)
    return {"status": "alive"}


@router.get("/health/ready", summary="Engine healthy, the registry read, and the preloaded aliases loaded",
            responses={503: {"description": "Not ready; 'problems' says why"}})
async def ready(request: Request):
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        return JSONResponse({"status": "starting", "problems": ["gateway starting"]}, status_code=503)
    ok, detail = gateway.ready()
    return JSONResponse({"status": "ready" if ok else "not_ready", **detail}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        await gateway.refresh_protocol_metrics()
    body = generate_latest(gateway.metrics.registry) if gateway else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
