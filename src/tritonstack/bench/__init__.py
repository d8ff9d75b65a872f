"""``tritonstack bench``: the served stack against the in-process limit and a plain PyTorch service.

Modules: ``runner`` (one run, variant by variant), ``inprocess`` (the limit),
``served`` (SDK -> gRPC -> Triton), ``baseline`` + ``baseline_app``
(FastAPI/uvicorn + PyTorch), ``results`` (points from rounds), ``hardware``
(peak and FLOP estimate), ``summary`` + ``report`` (JSON, table, PNG), and the
modes ``overload``, ``soak``, ``cache`` and ``sdk_overhead``. The load
generator, the core split, Triton's statistics and the samples are
``tritonstack.measure``'s.
"""
