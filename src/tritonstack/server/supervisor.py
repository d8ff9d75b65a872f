"""Bring back a model whose Python-backend stub died.

Triton 2.51's Python backend does not restart a stub that died (killed, or out
of memory): every later request to that model fails with INTERNAL "Stub process
... is not healthy" while the server and the model both still report ready
(upstream triton-inference-server/server#8604; the restart existed before the
backend's 24.x refactoring and was dropped). So the embedded server watches its
stubs: when the stub of a model that Triton lists as READY is gone (or a zombie),
it reloads that model through the repository API (model control mode
``explicit``, admin key), which starts fresh instances and retires the dead one.
A model unloaded on purpose is not READY, so it is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tritonstack.server.processes import stubs

logger = logging.getLogger(__name__)

POLL_S = 1.0
RETIRE_GRACE_S = 30.0


class StubSupervisor:
    """Polls the stubs of Triton ``server_pid`` every ``poll_s``; calls ``reload(model)`` for a model whose
    stub died while ``ready_models()`` still lists it. Runs in a daemon thread between :meth:`start` and
    :meth:`stop`; :meth:`check` is one poll (tests call it directly)."""

    def __init__(
        self,
        server_pid: int,
        ready_models: Callable[[], set[str]],
        reload: Callable[[str], None],
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self.server_pid = server_pid
        self.ready_models = ready_models
        self.reload = reload
        self.poll_s = poll_s
        self.reloaded: list[str] = []  # models brought back, in order
        self._known: dict[int, str] = {}  # live stub pid -> model
        # Stubs a model had when it was reloaded -> until when their exit is no death: a reload retires the
        # old instances after the load call returns, once the new ones serve.
        self._retiring: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """One poll: the models reloaded by it."""
        current = stubs(self.server_pid)
        live = {p.pid: p.model for p in current if p.alive and p.model is not None}
        now = time.monotonic()
        self._retiring = {pid: until for pid, until in self._retiring.items() if pid in live and until > now}
        dead = sorted({model for pid, model in self._known.items() if pid not in live})
        self._known = {pid: model for pid, model in live.items() if pid not in self._retiring}
        if not dead:
            return []
        ready = self.ready_models()
        reloaded = []
        for model in dead:
            if model not in ready:
                continue  # unloaded on purpose, or being unloaded
            logger.warning("the stub process of model %r died; reloading the model", model)
            try:
                self.reload(model)
            except Exception as error:  # the next poll tries again only if a stub of it comes back
                logger.error("reloading model %r failed: %s", model, error)
                continue
            reloaded.append(model)
            self._retiring |= {pid: now + RETIRE_GRACE_S for pid, owner in live.items() if owner == model}
        self.reloaded += reloaded
        return reloaded

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception as error:  # a watcher must never take the server down
                logger.error("stub supervisor: %s", error)

    def start(self) -> StubSupervisor:
        self.check()  # learn the stubs Triton started with
        self._thread = threading.Thread(target=self._run, name="tritonstack-stub-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
