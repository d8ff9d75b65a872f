"""Timeouts, retry policy and TLS settings: immutable values, validated when made."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest

from tritonstack.client import (
    UNSET,
    CircuitBreakerPolicy,
    ConfigurationError,
    RetryBudget,
    RetryPolicy,
    Timeouts,
    TLSConfig,
)
from tritonstack.client._config import DEFAULT_CALL_S, DEFAULT_CONNECT_S, RETRYABLE_CODES
from tritonstack.client._core import call_timeout_s, make_settings


def test_not_passed_means_default_and_none_means_no_limit() -> None:
    assert (Timeouts().connect_s, Timeouts().call_s) == (DEFAULT_CONNECT_S, DEFAULT_CALL_S)
    assert (Timeouts(None).connect_s, Timeouts(None).call_s) == (None, None)
    assert (Timeouts(call_s=None).connect_s, Timeouts(call_s=None).call_s) == (DEFAULT_CONNECT_S, None)
    assert (Timeouts(10).connect_s, Timeouts(10).call_s) == (10.0, 10.0)
    assert (Timeouts(10, connect_s=1).connect_s, Timeouts(10, connect_s=1).call_s) == (1.0, 10.0)
    assert Timeouts.coerce(UNSET) == Timeouts()
    assert Timeouts.coerce(None) == Timeouts(None)
    assert Timeouts.coerce(2.5) == Timeouts(2.5)


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan")])
def test_timeouts_reject_what_is_not_a_positive_number(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="seconds"):
        Timeouts(call_s=bad)  # type: ignore[arg-type]


def test_config_values_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeouts().call_s = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]


def test_a_call_timeout_overrides_the_client_default_and_none_disables_it() -> None:
    settings = make_settings("h:1", "m", None, Timeouts(7), None, None, None, 10, 1, ())
    assert call_timeout_s(settings, UNSET) == 7.0
    assert call_timeout_s(settings, None) is None
    assert call_timeout_s(settings, 0.5) == 0.5


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL]
)
def test_a_retry_policy_cannot_retry_unsafe_codes(code: grpc.StatusCode) -> None:
    with pytest.raises(ConfigurationError, match=code.name):
        RetryPolicy(retry_on=frozenset({grpc.StatusCode.UNAVAILABLE, code}))


def test_retry_policy_defaults_and_disabled() -> None:
    assert RetryPolicy().retry_on == RETRYABLE_CODES
    assert RetryPolicy.disabled().max_attempts == 1
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(jitter=1.5)


def test_tls_needs_cert_and_key_together_and_readable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="together"):
        TLSConfig(client_cert=tmp_path / "c.pem")
    with pytest.raises(ConfigurationError, match="root certificate") as info:
        TLSConfig(root_cert=tmp_path / "missing.pem").credentials()
    assert info.value.hint


def test_channel_args_carry_connect_timeout_and_options() -> None:
    settings = make_settings(
        ["grpc://a:1", "b:2"],
        "m",
        3,
        Timeouts(5, connect_s=0.25),
        None,
        TLSConfig(server_hostname="localhost"),
        {"X-Api-Key": "k"},
        10,
        1,
        [("grpc.keepalive_time_ms", 60_000)],
    )
    args = dict(settings.channel_args())
    assert settings.urls == ("a:1", "b:2")
    assert settings.version == "3"
    assert settings.headers == {"x-api-key": "k"}  # gRPC metadata keys must be lowercase
    assert args["grpc.min_reconnect_backoff_ms"] == 250
    assert args["grpc.ssl_target_name_override"] == "localhost"
    assert args["grpc.keepalive_time_ms"] == 60_000  # the caller's option wins
    assert args["grpc.max_receive_message_length"] > 4 * 1024 * 1024
    assert "grpc.min_reconnect_backoff_ms" not in dict(
        make_settings("a:1", None, None, Timeouts(connect_s=None), None, None, None, 10, 1, ()).channel_args()
    )


@pytest.mark.parametrize("url", ["", [], [""], [3]])
def test_settings_reject_bad_urls(url: object) -> None:
    with pytest.raises(ConfigurationError, match="url"):
        make_settings(url, None, None, Timeouts(), None, None, None, 10, 1, ())  # type: ignore[arg-type]


def test_the_breaker_is_on_by_default_and_budgets_bound_retries() -> None:
    settings = make_settings("h:1", "m", None, Timeouts(), None, None, None, 10, 1, ())
    assert settings.breaker == CircuitBreakerPolicy() and settings.breaker.enabled
    assert not make_settings(
        "h:1", "m", None, Timeouts(), None, None, None, 10, 1, (), CircuitBreakerPolicy.disabled()
    ).breaker.enabled
    assert RetryPolicy().budget == RetryBudget(max_tokens=10, token_ratio=0.1)
    assert RetryPolicy(budget=None).budget is None  # no budget: every retry the policy allows
    with pytest.raises(dataclasses.FrozenInstanceError):
        CircuitBreakerPolicy().open_s = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryBudget().max_tokens = 1  # type: ignore[misc]


def _settings(url: str | list[str], tls: TLSConfig | None = None) -> Any:
    return make_settings(url, "m", None, Timeouts(), None, tls, None, None, 1, ())


def test_a_grpcs_url_means_tls_with_the_system_roots_never_plaintext() -> None:
    settings = _settings("grpcs://triton.example:8001")
    assert (settings.urls, settings.tls) == (("triton.example:8001",), TLSConfig())
    mine = TLSConfig(server_hostname="triton")
    assert _settings(["grpcs://a:1", "b:2"], mine).tls is mine
    assert _settings("grpc://a:1").tls is None


@pytest.mark.parametrize(
    ("url", "tls", "message"),
    [
        (["grpc://a:1", "grpcs://b:1"], None, "mixed"),
        ("http://a:8000", None, "unsupported URL scheme 'http'"),
    ],
)
def test_contradictory_or_foreign_url_schemes_are_refused(url: str | list[str], tls: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _settings(url, tls)
