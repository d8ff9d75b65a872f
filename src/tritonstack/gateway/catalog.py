"""``GET /v1/models``: the tritonstack text-in models Triton serves, by their Triton names, with task and size.

The names come from Triton's repository index, a restricted API: the gateway asks for it only when it holds the
admin key (``$TRITONSTACK_ADMIN_KEY``), and otherwise lists the models its config names. Each name is kept only if
its metadata says it is a text-in model of a task the gateway serves (``ModelInfo.task``) and it is ready; the
pipeline's own steps (``_tokenizer``, ``_fused``, ...) are left out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tritonstack.client import ClientError, TLSConfig
from tritonstack.in_triton import contract
from tritonstack.server import flags

if TYPE_CHECKING:
    from tritonstack.gateway.app import Gateway

SERVED_TASKS = (contract.FEATURE_EXTRACTION.name, contract.TEXT_CLASSIFICATION.name, contract.TEXT_RANKING.name)
STEP_SUFFIXES = (contract.ENCODER_SUFFIX, contract.TOKENIZER_SUFFIX, contract.POSTPROCESS_SUFFIX, contract.FUSED_SUFFIX)


async def candidate_names(gateway: Gateway) -> list[str]:
    names = set(gateway.settings.config.models) | set(gateway.settings.config.releases)
    if gateway.settings.admin_key:
        from tritonclient.grpc.aio import InferenceServerClient

        headers = {flags.GRPC_ADMIN_KEY_HEADER: gateway.settings.admin_key}
        for url in gateway.settings.triton_urls:
            connection = InferenceServerClient(url.split("://", 1)[-1], **_tls_arguments(url, gateway.settings.tls))
            try:
                index = await connection.get_model_repository_index(headers=headers, client_timeout=2.0)
                names |= {model.name for model in index.models if model.state == "READY"}
                break
            except Exception:
                continue
            finally:
                await connection.close()
    return sorted(name for name in names if not name.endswith(STEP_SUFFIXES))


def _tls_arguments(url: str, tls: TLSConfig | None) -> dict[str, Any]:
    """The TLS the gateway's SDK client uses for ``url`` (``tls``; a ``grpcs://`` URL without it: the system's
    roots), for the raw tritonclient connection that reads the index."""
    if tls is None and url.startswith("grpcs://"):
        tls = TLSConfig()
    if tls is None:
        return {}
    return {"creds": tls.credentials(), "channel_args": tls.channel_options() or None}


async def list_models(gateway: Gateway) -> list[dict[str, object]]:
    async def describe(name: str) -> dict[str, object] | None:
        try:
            info = await gateway.client.model_info(model=name)
        except ClientError:
            return None
        if info.task not in SERVED_TASKS:
            return None
        embedding = next((s for s in info.outputs if s.name == contract.EMBEDDING_OUTPUT), None)
        dimensions = embedding.shape[-1] if embedding is not None and embedding.shape else None
        return {"id": name, "object": "model", "created": 0, "owned_by": "tritonstack", "task": info.task,
                "dimensions": dimensions}  # fmt: skip

    described = await asyncio.gather(*(describe(name) for name in await candidate_names(gateway)))
    return [entry for entry in described if entry is not None]
