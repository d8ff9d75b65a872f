"""tritonstack gateway: the OpenAI- and Cohere-compatible HTTP front of Triton (docs/gateway.md)."""
