"""tritonstack: a Hugging Face model to a measured, monitored NVIDIA Triton deployment.

The base install is the client SDK; ``export``, ``serve`` and ``loadtest`` come
with their extras (``pip install tritonstack[export,serve,loadtest]``).
"""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError

__version__ = "0.1.0"

__all__ = ["TritonStackError", "__version__"]
