"""The HTTP gateway: OpenAI embeddings, Cohere/Jina rerank and classify in front of Triton (docs/gateway.md).

``create_app(settings)`` is the ASGI app; ``tritonstack gateway`` runs it under uvicorn. Needs the ``gateway`` extra.
Names load on first use (as ``tritonstack.client``'s do), so importing one module of the package --
``gateway.cache``, ``gateway.tokenize`` -- does not import FastAPI and the app.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"create_app": "app", "GatewayConfig": "settings", "GatewaySettings": "settings", "load_config": "settings"}

__all__ = ["GatewayConfig", "GatewaySettings", "create_app", "load_config"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tritonstack.gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tritonstack.gateway.{home}"), name)
