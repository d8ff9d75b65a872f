"""The client's error tree and the one translation from gRPC status codes."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

import tritonstack
import tritonstack.client as client_api
from tritonstack import TritonStackError
from tritonstack.client import (
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    ServerUnavailableError,
    _exceptions,
)
from tritonstack.client._exceptions import STATUS_ERRORS, status_code, translate


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
