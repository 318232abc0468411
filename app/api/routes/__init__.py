"""The HTTP routes, one module per resource."""

from __future__ import annotations

from fastapi import FastAPI

from . import model, predict, probes


def include_routes(app: FastAPI) -> None:
    app.include_router(probes.router)
    app.include_router(predict.router)
    app.include_router(model.router)
