"""Argument types and options more than one command declares, so each is declared once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonstack.client import TLSConfig

CPU_SPLITS = ("pinned", "shared")


def _int_list(text: str, *, minimum: int, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected {what} (>= {minimum}), got {text!r}")
    return values


def positive_ints(text: str) -> tuple[int, ...]:
    """``1,8,16`` -> ``(1, 8, 16)``: batch sizes, concurrency levels."""
    return _int_list(text, minimum=1, what="positive integers")


def positive_int(text: str) -> int:
    """A whole number >= 1: a count."""
    values = _int_list(text, minimum=1, what="a positive integer")
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


def gpu_ids(text: str) -> tuple[int, ...]:
    """``0,1`` -> ``(0, 1)``; ``all`` -> ``()`` (list none: Triton uses every GPU of the host)."""
    if text.strip() == "all":
        return ()
    return _int_list(text, minimum=0, what="GPU ids or 'all'")


def non_negative_int(text: str) -> int:
    """A whole number >= 0, where 0 disables a bound."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 disables the bound), got {value}")
    return value


def word_range(text: str) -> tuple[int, int]:
    """``"2-10"`` -> (2, 10): words per text of a generated corpus (``--words``)."""
    low, sep, high = text.partition("-")
    try:
        words = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN-MAX words, e.g. 2-10") from None
    if not 1 <= words[0] <= words[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MAX")
    return words


def duration_s(text: str) -> float:
    """``600``, ``90s``, ``12m``, ``1h30m`` -> seconds (the SLO file's duration syntax)."""
    # imported here: the SDK's own commands (infer, gateway) read this module for add_tls, and the SDK imports
    # only the contract and the ground floor (tests/client/test_client_imports.py)
    from tritonstack.measure.slo import SLOSpecError, parse_duration_s

    try:
        return parse_duration_s(text)
    except SLOSpecError as error:  # argparse names the flag: keep the reason only
        raise argparse.ArgumentTypeError(error.message.split(": ", 2)[-1]) from None


def add_cpu_split(parser: argparse.ArgumentParser, *, pinned: str) -> None:
    """``--cpu-split``: whether the measured side and the load generator get cores of their own.

    ``pinned`` says what is pinned, e.g. "Triton on its own core(s)".
    """
    parser.add_argument(
        "--cpu-split",
        choices=CPU_SPLITS,
        default="pinned",
        help=f"pinned: {pinned}, load generator on the rest; shared: no pinning",
    )


def add_tls(parser: argparse.ArgumentParser) -> None:
    """The gRPC TLS options of the commands that call Triton (the SDK's ``TLSConfig``); read by :func:`tls_config`."""
    parser.add_argument("--root-cert", type=Path, help="TLS: PEM root certificate that signed the server's")
    parser.add_argument("--client-cert", type=Path, help="mutual TLS: PEM client certificate")
    parser.add_argument("--client-key", type=Path, help="mutual TLS: PEM client key")
    parser.add_argument("--server-hostname", help="TLS: the name to check in the server's certificate")


def tls_config(args: argparse.Namespace) -> TLSConfig | None:
    """The ``TLSConfig`` the options of :func:`add_tls` ask for; None (plaintext, or what ``grpcs://`` URLs ask
    for) when no certificate is named."""
    if not (args.root_cert or args.client_cert or args.client_key):
        return None
    from tritonstack.client import TLSConfig

    return TLSConfig(args.root_cert, args.client_cert, args.client_key, args.server_hostname)
