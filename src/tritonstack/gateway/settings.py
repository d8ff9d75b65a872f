"""The gateway's settings (``GatewaySettings``) and its YAML config file (``load_config`` -> ``GatewayConfig``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack._exceptions import TritonStackError
from tritonstack._ports import LOCAL_GRPC_URL, LOOPBACK

if TYPE_CHECKING:
    from tritonstack.client import TLSConfig

DEFAULT_GATEWAY_TIMEOUT_S = 10.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # 2048 inputs of ~4 KB each; a bigger body is a 413 before parsing
MAX_INPUTS = 2048  # OpenAI's limit of inputs per embeddings request (its client sends a caller's whole list)
# A text over the model's max tokens is cut unless the request (or the model's config) says otherwise: what the
# text-in model itself does, and what OpenAI-style callers that chunk their own texts expect.
DEFAULT_TRUNCATE = True
INPUT_TYPES = ("query", "document")
# Where /v1/embeddings tokenizes: in Triton's text-in model (the default), or -- experimental -- in the gateway,
# which then calls NAME_encoder with token ids (gateway/tokenize.py; docs/gateway.md, "Where tokenization happens").
TOKENIZE_AT = ("triton", "gateway")


class GatewayConfigError(TritonStackError):
    """The gateway's config file (or settings) cannot be used."""


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Per text-in model: the prefix per ``input_type``, the default of the request flag ``truncate``, and where
    /v1/embeddings tokenizes (``tokenize_at``; ``gateway`` reads the tokenizer from ``repository``)."""

    prefixes: Mapping[str, str] = field(default_factory=dict)
    truncate: bool = DEFAULT_TRUNCATE
    tokenize_at: str = TOKENIZE_AT[0]
    repository: Path | None = None


@dataclass(frozen=True, slots=True)
class ReleaseSplit:
    """A server-side split of ``model``'s calls between two releases (the SDK's ``TrafficSplit``), keyed by
    ``key``: ``user`` (the request's ``user`` field), ``header:NAME`` (a request header) or ``none`` (random)."""

    model: str
    baseline: int
    candidate: int
    weight: float
    key: str = "user"

    @property
    def header(self) -> str | None:
        return self.key.partition(":")[2].lower() if self.key.startswith("header:") else None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    models: Mapping[str, ModelOptions] = field(default_factory=dict)
    releases: Mapping[str, ReleaseSplit] = field(default_factory=dict)
    cache_ttl_s: int | None = None

    def options(self, model: str) -> ModelOptions:
        return self.models.get(model) or ModelOptions()


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What ``create_app`` needs: where Triton is (and the TLS to reach it), the config, the API keys (empty:
    auth off) and the limits."""

    triton_urls: tuple[str, ...] = (LOCAL_GRPC_URL,)
    tls: TLSConfig | None = None  # gRPC TLS to Triton; None: plaintext, or the system's roots for grpcs:// URLs
    config: GatewayConfig = field(default_factory=GatewayConfig)
    api_keys: frozenset[str] = frozenset()
    timeout_s: float = DEFAULT_GATEWAY_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inputs: int = MAX_INPUTS
    admin_key: str | None = None  # Triton's admin key: lists the repository index for /v1/models
    host: str = LOOPBACK


def load_config(path: Path | None) -> GatewayConfig:
    """The config at ``path`` (YAML, docs/gateway.md); ``None``: the empty config."""
    if path is None:
        return GatewayConfig()
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise GatewayConfigError(f"cannot read the gateway config {path}: {error}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, *, source: str = "config") -> GatewayConfig:
    """A ``GatewayConfig`` from the parsed YAML; every mistake names its place."""

    def fail(message: str) -> GatewayConfigError:
        return GatewayConfigError(f"{source}: {message}", hint="see docs/gateway.md, 'Config file'")

    if not isinstance(raw, dict):
        raise fail("the top level must be a mapping")
    unknown = set(raw) - {"models", "releases", "cache"}
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}")
    models: dict[str, ModelOptions] = {}
    for name, options in (raw.get("models") or {}).items():
        options = options or {}
        prefixes = options.get("prefixes") or {}
        if not isinstance(prefixes, dict) or set(prefixes) - set(INPUT_TYPES):
            raise fail(f"models.{name}.prefixes: a mapping with keys among {list(INPUT_TYPES)}")
        truncate = options.get("truncate", DEFAULT_TRUNCATE)
        if not isinstance(truncate, bool):
            raise fail(f"models.{name}.truncate must be true or false")
        tokenize_at = options.get("tokenize_at", TOKENIZE_AT[0])
        if tokenize_at not in TOKENIZE_AT:
            raise fail(f"models.{name}.tokenize_at must be one of {list(TOKENIZE_AT)}, got {tokenize_at!r}")
        repository = options.get("repository")
        if tokenize_at == "gateway" and not repository:
            raise fail(f"models.{name}.tokenize_at gateway needs models.{name}.repository (the tokenizer's files)")
        path = Path(str(repository)) if repository else None
        models[str(name)] = ModelOptions({k: str(v) for k, v in prefixes.items()}, truncate, tokenize_at, path)
    releases: dict[str, ReleaseSplit] = {}
    for name, split in (raw.get("releases") or {}).items():
        try:
            releases[str(name)] = ReleaseSplit(
                str(name), int(split["baseline"]), int(split["candidate"]), float(split["weight"]),
                str(split.get("key", "user")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise fail(f"releases.{name}: needs baseline, candidate, weight ({error})") from None
        key = releases[str(name)].key
        if key not in ("user", "none") and not (key.startswith("header:") and len(key) > len("header:")):
            raise fail(f"releases.{name}.key must be user, none or header:NAME, got {key!r}")
        if not 0.0 <= releases[str(name)].weight <= 1.0:
            raise fail(f"releases.{name}.weight must be a share, 0 to 1")
    ttl = (raw.get("cache") or {}).get("ttl_s")
    return GatewayConfig(models, releases, int(ttl) if ttl is not None else None)
