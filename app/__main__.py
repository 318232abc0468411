"""`python -m app`: read settings from the environment, check the weights, serve with uvicorn."""

from __future__ import annotations

import logging
import math
import os
import sys

import uvicorn
from pydantic import ValidationError

from app.main import create_app
from app.model.errors import WeightsUnavailableError
from app.server import ServingServer
from app.settings.config import Settings, describe_validation_error
from app.telemetry.logs import configure_logging
from app.telemetry.tracing import TracingConfig, TracingConfigError

log = logging.getLogger("app")

EXIT_CONFIG = 2
EXIT_MODEL = 1


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"resnet-serving: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        tracing = TracingConfig.from_env(os.environ)
    except TracingConfigError as exc:
        print(f"resnet-serving: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)

    fatal: list[BaseException] = []
    server: ServingServer | None = None

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        log.critical("stopping: %s", exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal, tracing=tracing)
    try:
        # Before binding the port: a process without weights must not look alive.
        app.state.service.host.resolve()
    except WeightsUnavailableError as exc:
        print(f"resnet-serving: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        # After SIGTERM: how long open requests may run before connections are closed.
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s),
    )
    server = ServingServer(config, on_stop=app.state.service.drain)
    server.run()
    if fatal:
        return EXIT_MODEL
    if not server.started:
        return EXIT_MODEL
    return 0


if __name__ == "__main__":
    sys.exit(main())
