"""The usual alternative: a FastAPI app serving the PyTorch model, one request per call.

Written the way such services usually are: a blocking ``def`` endpoint (FastAPI
runs it in its thread pool) calling the PyTorch model on the request --
``SentenceTransformer.encode`` on its one text, or for a pair task (a reranker)
``AutoModelForSequenceClassification`` on its (query, document) pairs, one
forward pass, documents truncated as the served tokenizer truncates them. Started by
``baseline.BaselineService`` as ``uvicorn --factory
tritonstack.bench.baseline_app:app_from_env``; installed only with the
``bench`` extra (fastapi, uvicorn).
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from tritonstack.bench.baseline import DEVICE_ENV, MAX_LENGTH_ENV, MODEL_DIR_ENV, TASK_ENV, THREADS_ENV
from tritonstack.in_triton import contract


class EmbedRequest(BaseModel):
    text: str


class EmbedResponse(BaseModel):
    embedding: list[float]


class RerankRequest(BaseModel):
    query: str
    documents: list[str]


class RerankResponse(BaseModel):
    scores: list[float]  # the raw relevance logit of each document, in the order sent


def create_app(
    model_dir: str,
    threads: int,
    device: str = "cpu",
    task: str = contract.FEATURE_EXTRACTION.name,
    max_length: int = 512,
) -> FastAPI:
    torch.set_num_threads(threads)  # the cores it was given, as the in-process and served variants
    app = FastAPI(title="PyTorch baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    if contract.task(task).pair:
        _add_rerank(app, model_dir, device, max_length)
    else:
        _add_embed(app, model_dir, device)
    return app


def _add_embed(app: FastAPI, model_dir: str, device: str) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device=device)  # "cuda": the model on the GPU, fp32 as it ships
    model.encode(["warm up"])

    @app.post("/embed")
    def embed(request: EmbedRequest) -> EmbedResponse:
        vector = model.encode([request.text], convert_to_numpy=True)[0]
        return EmbedResponse(embedding=vector.tolist())


def _add_rerank(app: FastAPI, model_dir: str, device: str, max_length: int) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()

    def scores(query: str, documents: list[str]) -> list[float]:
        # only_second: the query is never cut, as rerankers are trained and as the served tokenizer does
        batch = tokenizer(
            [query] * len(documents), documents, padding=True, truncation="only_second", max_length=max_length,
            return_tensors="pt",
        ).to(device)  # fmt: skip
        with torch.inference_mode():
            return [float(x) for x in model(**batch).logits[:, 0].cpu()]

    scores("warm up", ["warm up"])

    @app.post("/rerank")
    def rerank(request: RerankRequest) -> RerankResponse:
        return RerankResponse(scores=scores(request.query, request.documents))


def app_from_env() -> FastAPI:
    return create_app(
        os.environ[MODEL_DIR_ENV],
        int(os.environ.get(THREADS_ENV, "1")),
        os.environ.get(DEVICE_ENV, "cpu"),
        os.environ.get(TASK_ENV, contract.FEATURE_EXTRACTION.name),
        int(os.environ.get(MAX_LENGTH_ENV, "512")),
    )
