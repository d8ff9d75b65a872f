"""`tritonstack infer` against the real embedded Triton, through cli.main like a user's shell."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonstack.cli import main
from tritonstack.client import Client

pytestmark = pytest.mark.integration


def test_infer_prints_embeddings_as_json(triton: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["infer", "--url", triton.grpc_url, "--model", "tiny", "--text", "hello", "--text", "world", "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["task"] == "feature-extraction"
    with Client(triton.grpc_url, model="tiny") as client:
        expected = client.embed(["hello", "world"])
    np.testing.assert_allclose(np.array(document["embeddings"], np.float32), expected, atol=1e-6)
    assert main(["infer", "--url", triton.grpc_url, "--model", "tiny", "--text", "hello", "--text", "world"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["hello", "world"]
    assert all(line.startswith("[32] ") for line in lines)


def test_infer_classifies_lines_of_a_file(triton: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("good model\n\nbad server\n", encoding="utf-8")
    assert main(["infer", "--url", triton.grpc_url, "--model", "tiny_cls", "--file", str(texts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the blank line is skipped
    labels = [line.split("\t") for line in lines]
    assert [row[2] for row in labels] == ["good model", "bad server"]
    assert all(row[0] in {"POSITIVE", "NEGATIVE"} and 0.5 <= float(row[1]) <= 1 for row in labels)


def test_infer_reports_errors_with_a_hint_and_exit_code(triton: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--url", triton.grpc_url, "--model", "nope", "--text", "x"]) == 1
    err = capsys.readouterr().err
    assert "error: Request for unknown model" in err and "hint:" in err
    assert main(["infer", "--url", triton.grpc_url, "--model", "tiny_encoder", "--text", "x"]) == 1
    assert "not a tritonstack text model" in capsys.readouterr().err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    assert main(["infer", "--url", closed, "--model", "tiny", "--text", "x", "--timeout-s", "2"]) == 1
    assert "failed to connect" in capsys.readouterr().err
    assert main(["infer", "--url", triton.grpc_url, "--model", "tiny", "--text", "x", "--header", "novalue"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_infer_reports_invalid_settings_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The SDK's ConfigurationError reaches the CLI boundary: no check of its own in the command, no traceback.
    assert main(["infer", "--model", "tiny", "--text", "x", "--client-cert", str(tmp_path / "client.pem")]) == 1
    err = capsys.readouterr().err
    assert "error: client_cert and client_key go together" in err and "hint: pass both, or neither" in err
    assert main(["infer", "--model", "tiny", "--text", "x", "--timeout-s", "0"]) == 1
    assert "error: call_s must be a positive number of seconds" in capsys.readouterr().err
