"""The embedded Triton server and the Python-backend code it runs."""

from tritonstack.server.embedded import EmbeddedServer
from tritonstack.server.errors import ServerError, ServerStartError

__all__ = ["EmbeddedServer", "ServerError", "ServerStartError"]
