"""How an exported text-in model bounds its queues and sheds load: in the Python steps, not by a queue policy.

Triton's scheduler queues are unbounded by default. Under a load above
capacity every request then waits behind all earlier ones, clients give up at
their deadline, and the server keeps computing the abandoned backlog: one
burst takes the service down for everyone until the backlog drains. A server
that sheds load instead answers the excess at once with UNAVAILABLE (HTTP
503), which a client can tell apart from a dead server.

Triton's own tool for that, a ``default_queue_policy`` (``max_queue_size``, a
queue timeout with REJECT), breaks Triton 2.51's dynamic batcher: with any
policy the batcher stops prefetching, loses the wake-up when an instance frees
and sleeps a hard-coded 500 ms (core's dynamic_batch_scheduler.cc; the same
code up to the NGC 26.09 image). Measured on an echo model (docs/export.md):
calls stall 500 ms, a 100 ms queue timeout fires only after 500 ms, throughput
falls 6-8x. So export writes no queue policy, and sheds in two other ways:

* by queueing age, in every Python step (``in_triton/models/error_responses.py``):
  the SDK stamps each request with its send time, and a step answers a request
  that waited longer than the step's ``queue_budget_ms`` parameter UNAVAILABLE
  at once, without computing it. The budget is the whole request's: the age
  runs from the send, so each step of an ensemble checks the same budget.
  ``DEFAULT_QUEUE_BUDGET_MS`` is half the shipped SLO's p99 of 1 s
  (loadtest/slo.yaml), leaving the other half for the executions;
* by cancellation: a request whose client gave up (gRPC deadline, disconnect)
  reaches the model cancelled and is answered CANCELLED uncomputed. This is
  what a raw ``tritonclient`` caller, which sends no stamp, gets.

Triton's ``max_queue_size`` remains available, by explicit request only
(``export --max-queue-size``), for a deployment that wants a hard bound and
accepts the stall.
"""

from __future__ import annotations

from tritonstack.in_triton import contract
from tritonstack.repository.config import QueuePolicy
from tritonstack.repository.errors import RepositoryError

DEFAULT_QUEUE_BUDGET_MS = contract.DEFAULT_QUEUE_BUDGET_MS


def queue_policy(max_queue_size: int | None = None) -> QueuePolicy | None:
    """Triton's queue bound of ``max_queue_size`` requests, written only where asked for (> 0): ``None`` and 0
    write no policy, so the batcher does not stall. No queue timeout: the steps shed by age instead."""
    size = max_queue_size or 0
    if size < 0:
        raise RepositoryError(f"max_queue_size must be >= 0, got {size}", hint="pass 0 for no Triton queue bound")
    return QueuePolicy(max_queue_size=size, default_timeout_us=0) if size else None


def queue_budget_ms(budget_ms: int | None = None) -> int:
    """The queueing budget a Python step sheds by (milliseconds from the client's send; 0: none); ``None``
    takes the default."""
    budget = DEFAULT_QUEUE_BUDGET_MS if budget_ms is None else budget_ms
    if budget < 0:
        raise RepositoryError(f"the queue budget must be >= 0 ms, got {budget}", hint="pass 0 for none")
    return budget
