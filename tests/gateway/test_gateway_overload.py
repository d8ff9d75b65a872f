"""A real 429: a served model that sheds (its fused step refuses calls queued past its queue budget, the SDK's
OverloadedError) behind a real gateway process, overloaded by many concurrent requests by a wide margin.

The embedder is the tiny BERT exported with ``--layout fused`` and a queue budget of SHED_BUDGET_MS
(``contract.QUEUE_BUDGET_MS_PARAMETER``, as tests/server/test_server_overload.py's ``shedding`` step): alone, a
text is answered in a few milliseconds (a call of ROWS texts in ~10 ms); CONCURRENCY such calls at once queue for
~10x the budget (measured on the 2-core dev machine: about half of them shed, the rest 200).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from gateway_process import get, post, start_gateway

import tinymodels
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration

SHEDDER = "shedder"
SHED_BUDGET_MS = 50
CONCURRENCY = 64
ROWS = 64  # per request: one Triton call (the model's max batch)
TEXT = "an overloaded embedding service sheds what it cannot answer in time"


@pytest.fixture(scope="module")
def shedding_triton(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("gateway-overload")
    repository = root / "model_repository"
    tinymodels.export_fp32(
        tiny_model_dirs["tiny"], repository, SHEDDER, layout="fused", queue_timeout_ms=SHED_BUDGET_MS
    )
    with EmbeddedServer(repository, log_path=root / "triton.log") as server:
        yield server


def test_an_overloaded_model_answers_429_with_retry_after_and_the_rest_200(
    shedding_triton: Any, tmp_path: Path
) -> None:
    running = start_gateway(shedding_triton.grpc_url, tmp_path, config="{}", env={"TRITONSTACK_GATEWAY_API_KEYS": ""})
    url = running.url + "/v1/embeddings"
    one = {"model": SHEDDER, "input": "alone", "encoding_format": "float"}
    try:
        assert post(url, one)[0] == 200  # alone: well within the budget
        body = {"model": SHEDDER, "input": [TEXT] * ROWS, "encoding_format": "float"}
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(lambda _: post(url, body), range(CONCURRENCY)))
        statuses = sorted(status for status, _, _ in answers)
        assert set(statuses) <= {200, 429}, statuses
        refused = [(payload, headers) for status, payload, headers in answers if status == 429]
        assert refused, f"no call was shed: {statuses}"
        for payload, headers in refused:
            retry_after = {name.lower(): value for name, value in headers.items()}["retry-after"]
            assert int(retry_after) >= 1
            assert payload["error"]["type"] == "rate_limit_error" and payload["error"]["code"] == "overloaded"
            assert set(payload["error"]) == {"message", "type", "param", "code"}
            assert "shed" in payload["error"]["message"]
        for status, payload, _ in answers:
            if status == 200:
                assert len(payload["data"]) == ROWS and [d["index"] for d in payload["data"]] == list(range(ROWS))
        # the gateway and Triton behind it still answer afterwards
        assert get(running.url + "/health")[0] == 200
        status, payload, _ = post(url, one)
        assert status == 200, payload
        status, raw = get(running.url + "/metrics")
        shed = f'tritonstack_gateway_errors_total{{model="{SHEDDER}",route="/v1/embeddings",type="overloaded"}}'
        assert status == 200 and shed in raw.decode()
    finally:
        assert running.stop() == 0
