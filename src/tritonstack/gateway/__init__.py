"""The HTTP gateway: OpenAI embeddings, Cohere/Jina rerank and classify in front of Triton (docs/gateway.md).

``create_app(settings)`` is the ASGI app; ``tritonstack gateway`` runs it under uvicorn. Needs the ``gateway`` extra.
"""

from __future__ import annotations

from tritonstack.gateway.app import create_app
from tritonstack.gateway.settings import GatewayConfig, GatewaySettings, load_config

__all__ = ["GatewayConfig", "GatewaySettings", "create_app", "load_config"]
