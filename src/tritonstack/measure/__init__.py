"""The measurement library under bench, tune and loadtest: load, cores, timing, samples, Triton's counters, SLO."""
