"""EXPERIMENTAL ``tokenize_at: gateway``: /v1/embeddings tokenized in the gateway, token ids sent to NAME_encoder.

The default (``tokenize_at: triton``) sends the texts to the text-in model, which tokenizes in Triton and returns
the token counts (``contract.TOKENS_OUTPUT``). With ``tokenize_at: gateway`` and the model's repository readable
by the gateway, the gateway reads ``NAME_tokenizer``'s tokenizer files and parameters (the ensemble layout writes
them; the fused layout keeps them too), tokenizes by the one rule the served tokenizer uses
(``in_triton/models/tokenization.py``'s ``TextTokenizer``), counts the tokens itself and calls ``NAME_encoder``
with the int64 inputs. A feature-extraction encoder's ONNX graph already pools and normalises: its
``sentence_embedding`` is the answer. docs/gateway.md, "Where tokenization happens", has why this is not the
default (measured).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Encoding

from tritonstack.gateway.settings import GatewayConfigError
from tritonstack.in_triton import contract
from tritonstack.in_triton.models.tokenization import TextTokenizer

if TYPE_CHECKING:
    from tritonstack.client import AsyncClient, Usage

# Tokenizing more rows than this per request runs in a worker thread (tokenizers' encode_batch releases the GIL).
# Measured on the bundled MiniLM here (bench texts, ~70 tokens; tokenize, count and pad; busy 2-core EPYC): 1 row
# 0.07 ms, 16 rows 2.1 ms, 64 rows 9 ms, 2 048 rows 395 ms -- every other request of the process would wait that
# long on the event loop. The thread hop costs ~0.1 ms: not worth it for a few rows.
THREAD_ROWS = 8


@dataclass(frozen=True, slots=True)
class EncoderTarget:
    """What the gateway needs to call ``NAME_encoder`` directly, read from ``NAME_tokenizer``'s config."""

    encoder: str
    inputs: tuple[str, ...]
    output: str
    max_sequence_length: int
    version_dir: Path  # the tokenizer's version folder: tokenizer.json, tokenizer_config.json


def read_target(repository: Path, name: str) -> EncoderTarget:
    """``name``'s encoder and tokenizer as its repository describes them; ``GatewayConfigError`` naming the
    problem when the repository has no feature-extraction ``NAME_tokenizer`` with tokenizer files."""
    from tritonstack.repository.config import CONFIG_FILENAME, parameter, parse

    step = repository / contract.tokenizer_name(name)
    try:
        config = parse((step / CONFIG_FILENAME).read_text())
    except OSError as error:
        raise GatewayConfigError(
            f"tokenize_at gateway for {name!r}: cannot read {step / CONFIG_FILENAME}: {error.strerror}",
            hint="point models.NAME.repository at the repository Triton serves (docs/gateway.md)",
        ) from None
    task = parameter(config, contract.TASK_PARAMETER)
    if task != contract.FEATURE_EXTRACTION.name:
        raise GatewayConfigError(f"tokenize_at gateway serves feature-extraction models only; {name!r} is {task}")
    # the newest version folder with the tokenizer's files: what Triton's default version policy (latest) serves
    versions = sorted(
        (int(p.name) for p in step.iterdir() if p.name.isdigit() and (p / "tokenizer.json").is_file()), reverse=True
    )
    if not versions:
        raise GatewayConfigError(f"tokenize_at gateway for {name!r}: no version of {step} holds tokenizer.json")
    return EncoderTarget(
        encoder=parameter(config, contract.ENCODER_MODEL_PARAMETER) or contract.encoder_name(name),
        inputs=tuple((parameter(config, contract.ENCODER_INPUTS_PARAMETER) or "").split(",")),
        output=parameter(config, contract.ENCODER_OUTPUT_PARAMETER) or contract.FEATURE_EXTRACTION.encoder_output,
        max_sequence_length=int(parameter(config, contract.MAX_SEQUENCE_LENGTH_PARAMETER) or 0),
        version_dir=step / str(versions[0]),
    )


@dataclass(slots=True)
class Tokenized:
    """One request's rows tokenized: the encodings (unpadded) and ``contract.TOKENS`` per row, int32 ``[rows, 2]``."""

    encodings: list[Encoding]
    counts: np.ndarray


class GatewayTokenizer:
    """The tokenizer of one model, and its encoder called with the int64 inputs in chunks of ``max_batch_size``."""

    def __init__(self, target: EncoderTarget) -> None:
        self.target = target
        self.tokenizer = TextTokenizer(target.version_dir, target.max_sequence_length)

    def tokenize(self, rows: Sequence[str]) -> Tokenized:
        """Pure: the rows' encodings and token counts, as the served tokenizer makes them."""
        encodings = self.tokenizer.encode(rows)
        return Tokenized(list(encodings), self.tokenizer.token_counts(rows, encodings))

    def batches(self, tokenized: Tokenized, max_batch_size: int) -> list[dict[str, np.ndarray]]:
        """Pure: the encoder's inputs per chunk of at most ``max_batch_size`` rows (0: one chunk), each padded to
        its own longest row, as the served tokenizer pads each batch it is given."""
        encodings = tokenized.encodings
        size = max_batch_size if max_batch_size > 0 else max(len(encodings), 1)
        return [
            self.tokenizer.features(encodings[start : start + size], self.target.inputs)
            for start in range(0, len(encodings), size)
        ]

    async def embed(self, client: AsyncClient, rows: Sequence[str], usage: Usage) -> np.ndarray:
        """The rows' embeddings, FP32 ``[rows, hidden]`` in order; their counts recorded in ``usage``."""
        if len(rows) > THREAD_ROWS:
            tokenized = await asyncio.to_thread(self.tokenize, rows)
        else:
            tokenized = self.tokenize(rows)
        info = await client.model_info(model=self.target.encoder)
        chunks = self.batches(tokenized, info.max_batch_size)
        answers = await asyncio.gather(
            *(client.infer(chunk, model=self.target.encoder, outputs=[self.target.output]) for chunk in chunks)
        )
        usage.record(tokenized.counts)
        return np.concatenate([answer[self.target.output] for answer in answers]).astype(np.float32, copy=False)
