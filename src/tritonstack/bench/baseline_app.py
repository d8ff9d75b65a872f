"""The usual alternative: a FastAPI app serving the PyTorch sentence-transformers model, one text per call.

Written the way such services usually are: a blocking ``def`` endpoint (FastAPI
runs it in its thread pool) calling ``SentenceTransformer.encode`` on the one
text of the request. Started by ``baseline.BaselineService`` as
``uvicorn --factory tritonstack.bench.baseline_app:app_from_env``; installed
only with the ``bench`` extra (fastapi, uvicorn).
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

from tritonstack.bench.baseline import DEVICE_ENV, MODEL_DIR_ENV, THREADS_ENV


class EmbedRequest(BaseModel):
    text: str


class EmbedResponse(BaseModel):
    embedding: list[float]


def create_app(model_dir: str, threads: int, device: str = "cpu") -> FastAPI:
    torch.set_num_threads(threads)  # the cores it was given, as the in-process and served variants
    model = SentenceTransformer(model_dir, device=device)  # "cuda": the model on the GPU, fp32 as it ships
    model.encode(["warm up"])
    app = FastAPI(title="PyTorch embedding baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/embed")
    def embed(request: EmbedRequest) -> EmbedResponse:
        vector = model.encode([request.text], convert_to_numpy=True)[0]
        return EmbedResponse(embedding=vector.tolist())

    return app


def app_from_env() -> FastAPI:
    return create_app(
        os.environ[MODEL_DIR_ENV], int(os.environ.get(THREADS_ENV, "1")), os.environ.get(DEVICE_ENV, "cpu")
    )
