"""``tritonstack bench``: the served stack against the in-process limit and a plain PyTorch service.

Modules: ``command`` (CLI), ``runner`` (one run, variant by variant), ``inprocess``
(the limit), ``served`` (SDK -> gRPC -> Triton), ``baseline`` + ``baseline_app``
(FastAPI/uvicorn + PyTorch), ``load`` (the one load generator), ``triton_stats``
(where the served time went), ``cpus`` (core split), ``hardware`` (peak and
FLOP estimate), ``summary`` + ``report`` (JSON, table, PNG).
"""
