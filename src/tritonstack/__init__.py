"""tritonstack: a Hugging Face model to a measured, monitored NVIDIA Triton deployment.

The base install is the client SDK::

    import tritonstack

    with tritonstack.Client("127.0.0.1:8001", model="minilm") as client:
        vectors = client.embed(["hello world"])

``export``, ``serve`` and ``loadtest`` come with their extras
(``pip install 'tritonstack[export,serve,loadtest]'``). The SDK's names are
imported on first use, so ``import tritonstack`` (and the CLI's ``--help``)
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tritonstack import client as _client  # its __init__ only: the SDK's modules load on first use
from tritonstack._exceptions import TritonStackError

__version__ = "0.1.0"

# The SDK's public names (tritonstack.client.__all__, the one list of them), and the package's own.
__all__ = ["TritonStackError", "__version__"]
__all__ += _client.__all__

if TYPE_CHECKING:
    from tritonstack.client import *  # noqa: F403  (the names of tritonstack.client.__all__, for type checkers)


def __getattr__(name: str) -> Any:
    if name in _client.__all__:  # the SDK's names, imported on first use
        return getattr(_client, name)
    raise AttributeError(f"module 'tritonstack' has no attribute {name!r}")
