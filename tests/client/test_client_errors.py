"""The client's error tree and the one translation from gRPC status codes (and, within two, Triton's texts)."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

import tritonstack
import tritonstack.client as client_api
from tritonstack import TritonStackError
from tritonstack.client import (
    CircuitOpenError,
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    ServerUnavailableError,
    _exceptions,
)
from tritonstack.client._exceptions import MESSAGE_ERRORS, STATUS_ERRORS, status_code, translate


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_every_grpc_status_code_has_a_client_error(code: grpc.StatusCode) -> None:
    assert code in STATUS_ERRORS, f"grpc.StatusCode.{code.name} has no mapping in STATUS_ERRORS"
    error = translate(
        InferenceServerException("boom", status=str(code)), model="m", version="", request_id="r", url="u"
    )
    assert type(error) is STATUS_ERRORS[code]
    assert isinstance(error, ClientError) and isinstance(error, TritonStackError)
    assert error.code is code


def test_the_table_maps_only_grpc_codes_to_exported_error_classes() -> None:
    assert set(STATUS_ERRORS) == set(grpc.StatusCode)
    exported = {getattr(client_api, name) for name in client_api.__all__}
    assert set(STATUS_ERRORS.values()) <= exported


def test_every_client_error_class_is_public_in_both_packages() -> None:
    classes = {
        value for value in vars(_exceptions).values() if isinstance(value, type) and issubclass(value, ClientError)
    }
    assert client_api.ConfigurationError in classes
    assert classes <= {getattr(client_api, name) for name in client_api.__all__}
    assert classes <= {getattr(tritonstack, name) for name in tritonstack.__all__}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, ServerUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInputError),
        (grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
    ],
)
def test_translation_follows_the_code_not_the_message(code: grpc.StatusCode, expected: type) -> None:
    # The same misleading text under each code: only the code decides.
    exc = InferenceServerException("Deadline Exceeded: unknown model, server unavailable", status=str(code))
    error = translate(exc, model="tiny", version="2", request_id="abc", url="127.0.0.1:1")
    assert type(error) is expected
    assert (error.model, error.version, error.request_id, error.url) == ("tiny", "2", "abc", "127.0.0.1:1")
    assert "request_id=abc" in str(error) and f"status={code.name}" in str(error)


def test_an_error_without_status_is_a_plain_client_error() -> None:
    # tritonclient raises these itself, before anything is sent.
    error = translate(
        InferenceServerException("model version must be a string"), model="m", version=None, request_id=None, url=None
    )
    assert type(error) is ClientError and error.code is None


def test_status_code_reads_grpc_errors_and_tritonclient_strings() -> None:
    assert status_code(InferenceServerException("x", status="StatusCode.RESOURCE_EXHAUSTED")) is (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert status_code(InferenceServerException("x", status="not a status")) is None
    assert status_code(ValueError("x")) is None


def test_retryable_flags() -> None:
    retryable = {cls for cls in set(STATUS_ERRORS.values()) if cls.retryable}
    assert retryable == {ServerUnavailableError, client_api.ResourceExhaustedError}


def test_a_client_error_passes_through_translate_unchanged() -> None:
    error = InvalidInputError("bad", model="m")
    assert translate(error, model="other", version=None, request_id=None, url=None) is error


# Texts as Triton 2.51 sends them (seen from the real server; test_client_overload.py checks them live).
TRITON_OVERLOAD_TEXTS = [
    "[request id: <id_unknown>] Exceeds maximum queue size",
    "in ensemble 'tiny', [request id: 1a2b-3] Exceeds maximum queue size",
    "Request timeout expired",
    "in ensemble 'tiny', Request timeout expired",
]


@pytest.mark.parametrize("text", TRITON_OVERLOAD_TEXTS)
def test_triton_overload_under_unavailable_is_overloaded_not_unavailable(text: str) -> None:
    exc = InferenceServerException(text, status=str(grpc.StatusCode.UNAVAILABLE))
    error = translate(exc, model="tiny", version="", request_id="r", url="127.0.0.1:1")
    assert type(error) is OverloadedError and not isinstance(error, ServerUnavailableError)
    assert error.message == text and error.code is grpc.StatusCode.UNAVAILABLE and error.hint
    assert error.retryable


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.UNAVAILABLE])
def test_overload_texts_count_only_under_unavailable(code: grpc.StatusCode) -> None:
    exc = InferenceServerException(TRITON_OVERLOAD_TEXTS[1], status=str(code))
    assert type(translate(exc, model="m", version="", request_id="r", url="u")) is STATUS_ERRORS[code]


@pytest.mark.parametrize(
    "text",
    [
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
        "[request id: <id_unknown>] Server is stopping, scheduler for model has stopped accepting new "
        "inference requests",  # Triton 2.51 during a graceful stop: fail over, this one is going away
        "Socket closed",
    ],
)
def test_a_dead_or_stopping_server_stays_unavailable(text: str) -> None:
    exc = InferenceServerException(text, status=str(grpc.StatusCode.UNAVAILABLE))
    assert type(translate(exc, model="m", version="", request_id="r", url="u")) is ServerUnavailableError


def test_resource_exhausted_is_overload_unless_the_message_is_too_large() -> None:
    def translated(text: str) -> ClientError:
        exc = InferenceServerException(text, status=str(grpc.StatusCode.RESOURCE_EXHAUSTED))
        return translate(exc, model="m", version="", request_id="r", url="u")

    limit = translated("Too many pending streams")
    assert type(limit) is client_api.ResourceExhaustedError and isinstance(limit, OverloadedError)
    for text in ("Received message larger than max (5242880 vs. 4194304)", "Sent message larger than max (9 vs. 4)"):
        too_large = translated(text)
        assert type(too_large) is InvalidInputError and not too_large.retryable
        assert too_large.code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_refinements_stay_inside_the_exported_tree() -> None:
    exported = {getattr(client_api, name) for name in client_api.__all__}
    assert set(MESSAGE_ERRORS) == {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    for refinements in MESSAGE_ERRORS.values():
        assert all(cls in exported for _, cls in refinements)


def test_new_errors_sit_in_the_tree() -> None:
    assert issubclass(CircuitOpenError, ServerUnavailableError) and not CircuitOpenError.retryable
    assert issubclass(OverloadedError, ClientError) and issubclass(OverloadedError, TritonStackError)
    assert issubclass(client_api.ResourceExhaustedError, OverloadedError)
    assert not issubclass(OverloadedError, ServerUnavailableError)
