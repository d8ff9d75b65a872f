"""The queue policy every queued step of a text-in model gets: bounded, with a timeout, shedding by REJECT.

Triton's scheduler queues are unbounded by default. Under a load above capacity
every request then waits behind all earlier ones, clients give up at their
deadline, and the server keeps computing the abandoned backlog: one burst takes
the service down for everyone until the backlog drains. A bounded queue refuses
the excess at once with UNAVAILABLE (HTTP 503), which a client can tell apart
from a dead server, and a queue timeout drops what waited too long to be useful.

Defaults, from the model's ``max_batch_size`` (see docs/export.md):

* ``max_queue_size`` = ``QUEUED_BATCHES`` x ``max_batch_size`` requests: enough
  for the batcher to have full batches ready while one executes and to absorb a
  burst of that many concurrent requests, where a GPU drains each batch in
  milliseconds. On a CPU the same queue holds seconds of work, so there the
  timeout is the bound that matters.
* a queueing budget of ``DEFAULT_QUEUE_TIMEOUT_MS`` for the whole request:
  half the shipped SLO's p99 of 1 s (loadtest/slo.yaml), leaving the other half
  for the executions. A request waits in each step's queue in turn, so the
  budget is split over the steps (``STEP_SHARES``, adding up to 1) and the sum
  of the waits stays within it; most goes to the encoder, where the work waits
  on a CPU. Measured on the bundled MiniLM at 4x capacity (2-core VNNI, server
  on one core): 500 ms on *every* step let admitted calls wait 0.5 s at the
  tokenizer and again at the encoder, p99 1.1 s, over the SLO. A request that
  waited longer would miss the SLO anyway, and its client has likely given up;
  computing it would only delay fresher requests. At normal load a request
  waits about one execution, far less than its share.

The ensemble has no queue of its own (``dynamic_batching`` and
``ensemble_scheduling`` are one protobuf ``oneof``): its requests wait in the
queues of its steps, so each step carries the policy and each bounds its own wait.

Whatever rewrites a step's config later -- ``tritonstack tune`` when it lands,
a release -- must carry ``DynamicBatching.queue_policy`` over, or the step is
back to an unbounded queue.
"""

from __future__ import annotations

from tritonstack.repository.config import QueuePolicy
from tritonstack.repository.errors import RepositoryError

QUEUED_BATCHES = 4
DEFAULT_QUEUE_TIMEOUT_MS = 500
STEP_SHARES = {"tokenizer": 0.2, "encoder": 0.7, "postprocess": 0.1}


def queue_policy(
    max_batch_size: int, max_queue_size: int | None = None, timeout_ms: int | None = None, *, share: float = 1.0
) -> QueuePolicy | None:
    """The policy for a step batching up to ``max_batch_size`` rows that gets ``share`` of the request's
    queueing budget ``timeout_ms``; ``None`` when both bounds are off.

    ``max_queue_size`` (requests) and ``timeout_ms`` of ``None`` take the
    defaults above; 0 disables that bound. With the timeout off, Triton also
    ignores the clients' request timeouts: an override may only shorten the
    default, and nothing is shorter than "none".
    """
    size = QUEUED_BATCHES * max_batch_size if max_queue_size is None else max_queue_size
    budget = DEFAULT_QUEUE_TIMEOUT_MS if timeout_ms is None else timeout_ms
    timeout = max(1, round(budget * share)) if budget else 0
    if size < 0 or timeout < 0:
        raise RepositoryError(
            f"queue bounds must be >= 0, got max_queue_size={size}, timeout_ms={timeout}",
            hint="pass 0 to disable a bound",
        )
    if size == 0 and timeout == 0:
        return None
    return QueuePolicy(max_queue_size=size, default_timeout_us=timeout * 1000)
