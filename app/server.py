"""uvicorn, with our shutdown semantics.

On SIGTERM (or the first Ctrl-C) the service starts draining at once: /ready answers 503 and new
predictions are refused with 503, while requests already accepted (running or queued) still get
their answers; uvicorn then stops listening, waits for open requests and runs the lifespan
shutdown. The process exits 0: a requested stop is a success, not a death by signal (uvicorn by
default re-raises the signal after shutting down, which makes the exit status 143).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class ServingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open requests
            return
        log.info("shutdown requested", extra={"signal": signal.Signals(sig).name})
        self._on_stop()
        self.should_exit = True
