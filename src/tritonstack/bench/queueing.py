"""The floor of the half-load target: an ideal single server fed this run's own service times.

At half load one server core is at best a FIFO queue with Poisson arrivals
at utilisation 0.5. With every text taking the same time D (M/D/1) the
response time's p99 is 4.34 D; texts of mixed lengths take mixed times
(M/G/1), and the variance of the service time lengthens the queue
(Pollaczek-Khinchine), so the floor is higher: for the bench's 6-120-word
texts about 5.4x the median text's time. :func:`ideal_p99_factor` simulates
that queue with the service times the in-process limit measured one text per
call, so the bench can say how far the served path is from the floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ARRIVALS = 200_000  # simulated requests: the p99 is stable to about 1 % at this count
HALF_LOAD = 0.5


def ideal_p99_factor(
    service_s: Sequence[float], utilisation: float = HALF_LOAD, arrivals: int = ARRIVALS, seed: int = 0
) -> float | None:
    """p99 of the response time (wait + service) of an ideal single-server FIFO queue, Poisson arrivals at
    ``utilisation``, each request's service time drawn from ``service_s``, over the median of ``service_s``.
    ``None`` without samples."""
    samples = np.asarray(service_s, dtype=np.float64)
    if samples.size == 0 or not 0 < utilisation < 1:
        return None
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(samples.mean() / utilisation, arrivals)
    service = rng.choice(samples, arrivals)
    response = np.empty(arrivals)
    wait = 0.0
    for i in range(arrivals):  # Lindley: each request waits for what the one before left of its work
        if i:
            wait = max(0.0, wait + service[i - 1] - gaps[i])
        response[i] = wait + service[i]
    return float(np.percentile(response, 99) / np.median(samples))
