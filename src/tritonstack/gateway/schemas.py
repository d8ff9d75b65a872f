"""The request bodies the gateway accepts (pydantic: validation and the OpenAPI schema at /docs).

Responses are built as plain dicts and serialised by pydantic-core's ``to_json`` (see ``respond.py``): no
response model is validated on the way out. Unknown request fields are ignored, as OpenAI's and Cohere's
clients send fields of their own (``extra_headers`` aside, e.g. Cohere's ``max_tokens_per_doc``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

InputType = Literal["query", "document"]


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` plus ``input_type`` and ``truncate``."""

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text or a list of up to 2048 texts; token ids are refused (the models take text)"
    )
    model: str = Field(description="a text-in feature-extraction model Triton serves, by its Triton name")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="keep the first N dimensions and re-normalise (Matryoshka)")
    user: str | None = Field(None, description="the caller's id: the key of a release split")
    input_type: InputType | None = Field(None, description="selects the model's configured prefix")
    truncate: bool | None = Field(
        None, description="cut texts over the model's max tokens (default: config, else true)"
    )


class DocumentObject(BaseModel):
    text: str


class RerankRequest(BaseModel):
    """Cohere's / Jina's rerank: the documents ranked by relevance to the query."""

    model: str
    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    user: str | None = None
    truncate: bool | None = None


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: the label and score of each text from a text-classification model."""

    model: str
    input: str | list[str]
    user: str | None = None
    truncate: bool | None = None
