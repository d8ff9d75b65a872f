"""Locust users over the tritonstack SDK, or over ``tritonstack gateway``'s HTTP routes.

Importing this module imports Locust (which monkey-patches the process with
gevent); :func:`prepare_process` initialises gRPC's gevent integration, which must
happen before any gRPC channel exists; :func:`make_client`, the one place
channels are made, makes sure it ran. Each user owns its own :class:`tritonstack.client.Client`
(gRPC channels are not shared across greenlets), created in ``on_start``. A host
that is an ``http://`` or ``https://`` URL is the gateway: the user then owns a
:class:`tritonstack.loadtest.gateway_client.GatewayClient` with the same call
methods, and the same SLO file, samples, verdict and report apply.

Every request fires Locust's ``request`` event with the latency as a float in
ms and, in ``context``, the exact latency in µs: Locust's own statistics round
to whole milliseconds, the verdict uses the µs samples
(:mod:`tritonstack.loadtest.plugin`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import random
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import locust  # noqa: F401  (first: gevent's monkey-patching happens on import)
from locust import User, task

from tritonstack._ports import LOCAL_GRPC_URL
from tritonstack.in_triton import contract
from tritonstack.loadtest.plugin import drain_for
from tritonstack.measure.payload import PayloadMix, load_texts, request_call
from tritonstack.measure.slo import DEFAULT_HOT_SET

if TYPE_CHECKING:
    from tritonstack.measure.slo import SLO

# How long a user waits once its step drains; it is stopped long before.
_DRAINED_WAIT_S = 3600.0

_GRPC_GEVENT_READY = False
_CLIENTS: weakref.WeakSet[Any] = weakref.WeakSet()


def prepare_process() -> None:
    """gRPC's gevent integration (before the first channel exists) and the SDK import.

    Call it in each process that runs users, before they start: importing the
    SDK (grpc, tritonclient, numpy) takes seconds on a busy machine and blocks
    the whole gevent process while it runs. Not at import time of this module:
    ``locust --processes`` imports the locustfile and then forks, and gRPC's
    core must not be initialised before a fork.
    """
    global _GRPC_GEVENT_READY
    if not _GRPC_GEVENT_READY:
        import grpc.experimental.gevent

        grpc.experimental.gevent.init_gevent()
        import tritonstack.client  # noqa: F401

        _GRPC_GEVENT_READY = True


@dataclass(frozen=True)
class UserSettings:
    """What every user needs, JSON-serialisable so worker processes get the same settings.

    ``arrival_rate_rps`` is the *total* rate over ``users`` users; each user is
    paced to ``arrival_rate_rps / users`` requests per second.
    """

    model: str
    task: str = contract.FEATURE_EXTRACTION.name
    texts_file: str | None = None
    texts_per_request: int = 1
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    arrival_rate_rps: float | None = None
    users: int = 1
    repeat_ratio: float | None = None  # the SLO's payload.repeat_ratio (payload.py)
    hot_set: int = DEFAULT_HOT_SET
    # A traffic split between two releases of `model` (tritonstack canary): candidate_weight of the
    # requests to release `candidate`, the rest to `baseline`; None: plain calls to `model`.
    baseline: int | None = None
    candidate: int | None = None
    candidate_weight: float = 0.0

    @property
    def pacing_s(self) -> float | None:
        """Seconds between request starts for one user; ``None``: back to back (closed model)."""
        if self.arrival_rate_rps is None:
            return None
        return self.users / self.arrival_rate_rps

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> UserSettings:
        return cls(**json.loads(text))

    @classmethod
    def from_slo(cls, slo: SLO, *, users: int | None = None, closed_model: bool = False) -> UserSettings:
        """What an SLO asks of each user. ``users`` (default: the SLO's) share its arrival rate;
        ``closed_model`` drops the rate: each user sends back to back (the capacity search)."""
        return cls(
            model=slo.model,
            task=slo.task,
            texts_file=str(slo.payload.texts_file) if slo.payload.texts_file else None,
            texts_per_request=slo.payload.texts_drawn(slo.task),  # text-ranking: the query and its documents
            timeout_s=slo.load.timeout_s,
            arrival_rate_rps=None if closed_model else slo.load.arrival_rate_rps,
            users=max(1, slo.load.users if users is None else users),
            repeat_ratio=slo.payload.repeat_ratio,
            hot_set=slo.payload.hot_set,
        )

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> UserSettings:
        """From the ``locust`` command line (flags added by :mod:`tritonstack.loadtest.locust_cli`)."""
        # On a worker, num_users is not the test's; the master sends its count as tritonstack_users.
        users = getattr(options, "tritonstack_users", None) or getattr(options, "num_users", None) or 1
        return _settings_from_slo(options.slo, options.model or None, options.texts or None, int(users))


@functools.lru_cache(maxsize=8)
def _settings_from_slo(slo_path: str, model: str | None, texts: str | None, users: int) -> UserSettings:
    # Once per process, not once per user.
    from tritonstack.measure.slo import load_slo

    settings = UserSettings.from_slo(load_slo(slo_path).with_overrides(model=model), users=users)
    return replace(settings, texts_file=texts) if texts else settings


@functools.lru_cache(maxsize=8)
def _texts(path: str | None) -> tuple[str, ...]:
    # Read once per process, not once per user.
    return tuple(load_texts(Path(path) if path else None))


def make_client(host: str, settings: UserSettings) -> Any:
    """The client one user (or the pre-flight check) talks through: the SDK's for Triton's gRPC endpoint,
    a :class:`GatewayClient` for the gateway's URL (``http://HOST:PORT``)."""
    prepare_process()
    from tritonstack.loadtest.gateway_client import GatewayClient, is_gateway_url

    if is_gateway_url(host):
        gateway = GatewayClient(
            host, model=settings.model, timeout_s=settings.timeout_s, connect_timeout_s=settings.connect_timeout_s
        )
        _CLIENTS.add(gateway)
        return gateway
    from tritonstack.client import Client, Timeouts

    client = Client(
        host, model=settings.model, timeouts=Timeouts(connect_s=settings.connect_timeout_s, call_s=settings.timeout_s)
    )
    _CLIENTS.add(client)
    return client


def close_clients() -> None:
    """Close every SDK client this process made, and collect them, while gevent's hub still runs.

    Call it before the process exits: a gRPC channel that tritonclient's ``__del__``
    closes during interpreter shutdown (the hub already gone) never returns, and
    the process hangs instead of exiting.
    """
    for client in list(_CLIENTS):
        client.close()
    gc.collect()


def exit_now(code: int) -> NoReturn:
    """Leave a process that ran users without interpreter finalization.

    gRPC under gevent can deadlock when finalization collects a channel (grpc's
    ``gevent_decrement_channel_count`` waits on a lock nobody will release once
    the hub is gone). Seen in Locust worker processes even after every client
    was closed and collected; a worker has nothing left to flush but stdio.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def client_call(client: Any, task_name: str) -> Callable[[Sequence[str]], object]:
    """The SDK call of the task (``contract.Task.sdk_method``: ``embed``, ``classify``, ``rerank``) on one
    request's texts (``payload.request_call``)."""
    return request_call(getattr(client, _sdk_method(task_name)), task_name)


def _sdk_method(task_name: str) -> str:
    method = contract.task(task_name).sdk_method
    if method is None:
        raise ValueError(f"the SDK has no call for {task_name}; the load test drives {', '.join(contract.SDK_TASKS)}")
    return method


def user_call(client: Any, settings: UserSettings) -> Callable[[Sequence[str]], object]:
    """What a user calls per request: the model, or a release the settings' traffic split picks
    (the call then returns a ``Routed`` result, whose release ``timed`` records)."""
    if settings.baseline is None or settings.candidate is None:
        return client_call(client, settings.task)
    if getattr(client, "protocol", "grpc") != "grpc":
        from tritonstack.client import ConfigurationError

        raise ConfigurationError(
            "a client-side split between releases needs the SDK's gRPC path",
            hint="the gateway splits releases itself (releases: in its config, docs/gateway.md)",
        )
    from tritonstack.client import TrafficSplit

    split = TrafficSplit(settings.model, settings.baseline, settings.candidate, settings.candidate_weight)
    routed = getattr(client, f"{_sdk_method(settings.task)}_release")  # Client.embed_release, classify_release
    return request_call(functools.partial(routed, route=split), settings.task)


class TritonStackUser(User):
    """An abstract user owning one SDK client; concrete users define tasks that call :meth:`timed`.

    Settings come from the class attribute ``settings`` (set by
    :func:`user_class`), else from the ``locust`` command line.
    """

    abstract = True
    settings: ClassVar[UserSettings | None] = None

    def on_start(self) -> None:
        settings = type(self).settings or UserSettings.from_options(self.environment.parsed_options)
        self.user_settings = settings
        self.mix = PayloadMix(
            _texts(settings.texts_file), settings.texts_per_request, seed=random.getrandbits(32),
            repeat_ratio=settings.repeat_ratio, hot_set_size=settings.hot_set,
        )  # fmt: skip
        self.client = make_client(self.host or LOCAL_GRPC_URL, settings)
        self._call = user_call(self.client, settings)
        self.drain = drain_for(self.environment)
        # Connect and fetch the model's metadata now, so the first timed request is not the slow one;
        # a failure here shows up again, counted, in the first request.
        with contextlib.suppress(Exception):
            self.client.model_info()
        pacing_s = settings.pacing_s
        # A random phase so that paced users do not all fire at the same instant.
        self._next_start_s = time.monotonic() + (random.uniform(0, pacing_s) if pacing_s else 0.0)

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None  # Locust keeps stopped users around; the channel must not outlive the hub

    def wait_time(self) -> float:
        """Closed model: no think time. Arrival-rate mode: keep a fixed start-to-start interval;
        a user that falls behind starts at once and does not burst to catch up."""
        if self.drain.draining:
            return _DRAINED_WAIT_S
        pacing_s = self.user_settings.pacing_s
        if pacing_s is None:
            return 0.0
        now = time.monotonic()
        self._next_start_s = max(self._next_start_s + pacing_s, now)
        return self._next_start_s - now

    def timed(self, name: str, call: Callable[[Sequence[str]], object], texts: Sequence[str], kind: str = "") -> None:
        """Call the SDK and report the request to Locust with µs timing; errors become failures.
        ``kind`` (``"repeat"``/``"unique"``, see ``payload.py``) travels with the sample.

        Nothing is sent once the step drains (the request would straddle the stop)."""
        if self.drain.draining:
            return
        start_s = time.time()
        self.drain.in_flight += 1
        started_ns = time.perf_counter_ns()
        exception: Exception | None = None
        context: dict[str, int] = {}
        try:
            answer = call(texts)
        except Exception as error:  # every failure is a sample: its type name is the outcome
            exception = error
        else:
            release = getattr(answer, "release", None)  # a Routed result: which release answered
            if release is not None:
                context["release"] = release.version
        finally:
            latency_ns = time.perf_counter_ns() - started_ns
            self.drain.in_flight -= 1
        self.environment.events.request.fire(
            request_type=getattr(self.client, "protocol", "grpc"),
            name=name,
            response_time=latency_ns / 1e6,
            response_length=len(texts),
            response=None,
            context={"latency_us": latency_ns // 1000, "kind": kind, **context},
            exception=exception,
            start_time=start_s,
            url=self.host,
        )


class TextModelUser(TritonStackUser):
    """Sends texts from the payload mix to the model: ``embed``, ``classify`` or ``rerank`` by the SLO's task."""

    @task
    def infer(self) -> None:
        settings = self.user_settings
        request = self.mix.draw()
        self.timed(settings.task, self._call, request.texts, request.kind)


def user_class(settings: UserSettings) -> type[TextModelUser]:
    """A :class:`TextModelUser` subclass with ``settings`` baked in (the library-API path)."""
    return type("TextModelUser", (TextModelUser,), {"settings": settings, "__module__": __name__})
