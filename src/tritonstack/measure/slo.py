"""The SLO file: what load to apply and which objectives must hold.

A YAML mapping (``loadtest/slo.yaml`` is the documented example)::

    model: tiny                  # the text-in model Triton serves
    task: feature-extraction     # or text-classification, text-ranking
    load:
      users: 8                   # concurrent users (closed model) ...
      spawn_rate: 8              # ... started per second
      arrival_rate_rps: 50       # optional: pace the users to this total rate
      duration: 30s
      timeout_s: 10
    payload:
      texts: texts.txt           # one text per line, relative to this file
      texts_per_request: 1
      documents_per_query: 8     # text-ranking instead: one query (the shortest drawn) and this many documents
      repeat_ratio: 0.5          # optional: this share of requests repeats one of a hot set ...
      hot_set: 16                # ... of this many requests; the others are never seen before
    objectives:                  # at least one
      p50_ms: 20
      p99_ms: 100                # any pNN_ms / pNN.N_ms
      max_error_ratio: 0.001
      min_throughput_rps: 50
    capacity:                    # for --find-capacity
      start_users: 1
      factor: 2
      max_users: 128
      step_duration: 10s
    cost:                        # optional: adds cost per million inferences
      price_per_hour_usd: 2.50   # what the serving capacity under test costs per hour

Every validation error names the file and the field (``slo.yaml: load.users:
must be a positive integer, got -3``) and unknown keys are errors, so a typo
such as ``p99: 100`` cannot silently drop an objective.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.in_triton import contract
from tritonstack.measure.errors import SLOSpecError

TASKS = contract.SDK_TASKS  # the tasks the SDK has a call for: the load test drives a model through it
# The percentiles with a command-line flag of their own (--p99-ms), in `tritonstack loadtest` and in `locust`.
FLAG_PERCENTILES = ("50", "95", "99")
_PERCENTILE_KEY = re.compile(r"^p(\d{1,2}(?:\.\d+)?)_ms$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True)
class LoadSpec:
    """The load: ``users`` concurrent users, started at ``spawn_rate`` users/s, for ``duration_s``.

    With ``arrival_rate_rps`` the users are paced (Locust's ``constant_throughput``)
    so that together they start that many requests per second; ``users`` is then
    the pool that carries the rate and caps concurrency.
    """

    users: int
    spawn_rate: float
    duration_s: float
    arrival_rate_rps: float | None = None
    timeout_s: float = 10.0

    @property
    def mode(self) -> str:
        return "users" if self.arrival_rate_rps is None else "arrival-rate"


@dataclass(frozen=True)
class Objectives:
    """What must hold. ``latency_ms`` maps a percentile (``99.0``) to its bound in ms."""

    latency_ms: Mapping[float, float] = field(default_factory=dict)
    max_error_ratio: float | None = None
    min_throughput_rps: float | None = None

    def is_empty(self) -> bool:
        return not self.latency_ms and self.max_error_ratio is None and self.min_throughput_rps is None


DEFAULT_HOT_SET = 16
DEFAULT_DOCUMENTS_PER_QUERY = 8  # a rerank request of the load test: one query and this many documents


@dataclass(frozen=True)
class PayloadSpec:
    """Where the texts come from. ``texts_file`` of ``None`` means the built-in mix.

    With ``repeat_ratio`` that share of the requests repeats one of ``hot_set``
    fixed requests (what a response cache can answer) and every other request is
    one never sent before (what it cannot); without it, texts are drawn from the
    file at random (see ``payload.py``).
    """

    texts_file: Path | None = None
    texts_per_request: int = 1
    repeat_ratio: float | None = None  # 0..1; None: plain random draws from the texts
    hot_set: int = DEFAULT_HOT_SET  # distinct requests the repeats are drawn from
    documents_per_query: int = DEFAULT_DOCUMENTS_PER_QUERY  # a pair task (text-ranking): documents per request

    def texts_drawn(self, task: str) -> int:
        """Texts drawn from the file per request: ``texts_per_request``, or for a pair task (text-ranking)
        its query and ``documents_per_query`` documents (the SDK call takes the first as the query)."""
        return 1 + self.documents_per_query if contract.task(task).pair else self.texts_per_request


@dataclass(frozen=True)
class CapacitySpec:
    """``--find-capacity``: users go ``start_users``, ×``factor``, ... up to ``max_users``."""

    start_users: int = 1
    factor: float = 2.0
    max_users: int = 128
    step_duration_s: float = 10.0


@dataclass(frozen=True)
class CostSpec:
    """What the serving capacity under test costs: ``price_per_hour_usd`` for all its machines together."""

    price_per_hour_usd: float


@dataclass(frozen=True)
class SLO:
    model: str
    load: LoadSpec
    objectives: Objectives
    task: str = contract.FEATURE_EXTRACTION.name
    payload: PayloadSpec = field(default_factory=PayloadSpec)
    capacity: CapacitySpec = field(default_factory=CapacitySpec)
    cost: CostSpec | None = None  # None: no cost figures
    source: str = "<slo>"

    def with_overrides(
        self,
        *,
        users: int | None = None,
        spawn_rate: float | None = None,
        run_time_s: float | None = None,
        latency_ms: Mapping[float, float] | None = None,
        model: str | None = None,
        price_per_hour_usd: float | None = None,
    ) -> SLO:
        """A copy with command-line overrides applied (``None`` keeps the file's value)."""
        load = self.load
        if users is not None:
            _require(users >= 1, "--users", f"must be at least 1, got {users}", "command line")
            # Without an explicit spawn rate, keep the file's ramp time rather than its rate.
            ramp_s = self.load.users / self.load.spawn_rate
            load = dataclasses.replace(load, users=users, spawn_rate=users / ramp_s)
        if spawn_rate is not None:
            _require(spawn_rate > 0, "--spawn-rate", f"must be positive, got {spawn_rate}", "command line")
            load = dataclasses.replace(load, spawn_rate=spawn_rate)
        if run_time_s is not None:
            _require(run_time_s > 0, "--run-time", f"must be positive, got {run_time_s}", "command line")
            load = dataclasses.replace(load, duration_s=run_time_s)
        objectives = self.objectives
        if latency_ms:
            for percentile, bound in latency_ms.items():
                _require(bound > 0, f"--p{percentile:g}-ms", f"must be positive, got {bound}", "command line")
            objectives = dataclasses.replace(objectives, latency_ms={**objectives.latency_ms, **latency_ms})
        cost = self.cost
        if price_per_hour_usd is not None:
            _require(
                math.isfinite(price_per_hour_usd) and price_per_hour_usd > 0,
                "--price-per-hour", f"must be a positive number of USD, got {price_per_hour_usd}", "command line",
            )  # fmt: skip
            cost = CostSpec(price_per_hour_usd)
        return dataclasses.replace(self, load=load, objectives=objectives, model=model or self.model, cost=cost)


def latency_overrides(options: object) -> dict[float, float]:
    """The ``--pNN-ms`` flags given on a command line (``options.pNN_ms``), by percentile, for
    :meth:`SLO.with_overrides`; a flag left out (``None``) keeps the file's objective."""
    given = {float(percentile): getattr(options, f"p{percentile}_ms") for percentile in FLAG_PERCENTILES}
    return {percentile: bound for percentile, bound in given.items() if bound is not None}


def parse_duration_s(value: object, *, where: str = "duration", source: str = "<slo>") -> float:
    """``30``, ``"30s"``, ``"2m"``, ``"1h30m"``, ``"500ms"`` -> seconds."""
    if isinstance(value, bool):
        raise SLOSpecError(f"{source}: {where}: expected a duration such as 30s or 2m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if "".join(number + unit for number, unit in parts) != text:
                raise SLOSpecError(
                    f"{source}: {where}: expected a duration such as 30s, 2m or 1h30m, got {value!r}"
                ) from None
            seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    else:
        raise SLOSpecError(f"{source}: {where}: expected a duration such as 30s or 2m, got {value!r}")
    _require(math.isfinite(seconds) and seconds > 0, where, f"must be positive, got {value!r}", source)
    return seconds


def load_slo(path: str | Path) -> SLO:
    """Read and validate an SLO file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SLOSpecError(f"cannot read SLO file {path}: {error.strerror}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SLOSpecError(f"{path}: not valid YAML: {error}") from error
    return parse_slo(document, source=str(path), base_dir=path.parent)


def parse_slo(document: object, *, source: str = "<slo>", base_dir: Path | None = None) -> SLO:
    """Validate a parsed YAML document into an :class:`SLO`."""
    root = _mapping(document, "the document", source)
    _no_unknown(root, {"model", "task", "load", "payload", "objectives", "capacity", "cost"}, "", source)
    model = root.get("model")
    _require(isinstance(model, str) and bool(model.strip()), "model", "required: the served model's name", source)
    assert isinstance(model, str)
    task = root.get("task", contract.FEATURE_EXTRACTION.name)
    _require(task in TASKS, "task", f"must be one of {', '.join(TASKS)}, got {task!r}", source)
    _require("load" in root, "load", "required: users and duration (or arrival_rate_rps)", source)
    _require("objectives" in root, "objectives", "required: at least one objective", source)
    return SLO(
        model=model.strip(),
        task=task,
        load=_parse_load(_mapping(root["load"], "load", source), source),
        objectives=_parse_objectives(_mapping(root["objectives"], "objectives", source), source),
        payload=_parse_payload(
            _mapping(root.get("payload", {}), "payload", source), source, base_dir, contract.task(task).pair
        ),
        capacity=_parse_capacity(_mapping(root.get("capacity", {}), "capacity", source), source),
        cost=_parse_cost(_mapping(root["cost"], "cost", source), source) if "cost" in root else None,
        source=source,
    )


def _parse_load(load: Mapping[str, Any], source: str) -> LoadSpec:
    _no_unknown(load, {"users", "spawn_rate", "arrival_rate_rps", "duration", "timeout_s"}, "load.", source)
    rate = _number(load, "arrival_rate_rps", "load.", source, positive=True)
    if "users" in load:
        users = _positive_int(load["users"], "load.users", source)
    elif rate is not None:
        # Enough users for requests of up to 100 ms each to carry the rate.
        users = max(1, math.ceil(rate * 0.1))
    else:
        raise SLOSpecError(f"{source}: load.users: required (or load.arrival_rate_rps)")
    spawn_rate = _number(load, "spawn_rate", "load.", source, positive=True)
    _require("duration" in load, "load.duration", "required, e.g. 30s", source)
    timeout_s = _number(load, "timeout_s", "load.", source, positive=True)
    return LoadSpec(
        users=users,
        spawn_rate=spawn_rate if spawn_rate is not None else float(users),
        duration_s=parse_duration_s(load["duration"], where="load.duration", source=source),
        arrival_rate_rps=rate,
        timeout_s=timeout_s if timeout_s is not None else 10.0,
    )


def _parse_objectives(objectives: Mapping[str, Any], source: str) -> Objectives:
    latency_ms: dict[float, float] = {}
    for key in objectives:
        match = _PERCENTILE_KEY.match(str(key))
        if match:
            bound = _number(objectives, key, "objectives.", source, positive=True)
            assert bound is not None
            latency_ms[float(match.group(1))] = bound
        elif key not in ("max_error_ratio", "min_throughput_rps"):
            raise SLOSpecError(
                f"{source}: objectives.{key}: unknown objective",
                hint="objectives are pNN_ms (e.g. p99_ms), max_error_ratio and min_throughput_rps",
            )
    error_ratio = _number(objectives, "max_error_ratio", "objectives.", source)
    if error_ratio is not None:
        _require(0 <= error_ratio <= 1, "objectives.max_error_ratio", f"must be in [0, 1], got {error_ratio}", source)
    throughput = _number(objectives, "min_throughput_rps", "objectives.", source, positive=True)
    result = Objectives(latency_ms=latency_ms, max_error_ratio=error_ratio, min_throughput_rps=throughput)
    _require(not result.is_empty(), "objectives", "at least one objective is required", source)
    return result


def _parse_payload(payload: Mapping[str, Any], source: str, base_dir: Path | None, pair: bool) -> PayloadSpec:
    known = {"texts", "texts_per_request", "repeat_ratio", "hot_set", "documents_per_query"}
    _no_unknown(payload, known, "payload.", source)
    # a rerank request is one query and its documents; a request of the other tasks is a number of texts
    if pair and "texts_per_request" in payload:
        raise SLOSpecError(
            f"{source}: payload.texts_per_request: a text-ranking request is one query and "
            "payload.documents_per_query documents"
        )
    if not pair and "documents_per_query" in payload:
        raise SLOSpecError(f"{source}: payload.documents_per_query: only means something with task: text-ranking")
    documents = _positive_int(
        payload.get("documents_per_query", DEFAULT_DOCUMENTS_PER_QUERY), "payload.documents_per_query", source
    )
    texts_file: Path | None = None
    if "texts" in payload:
        raw = payload["texts"]
        _require(isinstance(raw, str) and bool(raw), "payload.texts", "must be a file path", source)
        texts_file = Path(raw)
        if not texts_file.is_absolute() and base_dir is not None:
            texts_file = base_dir / texts_file
        _require(texts_file.is_file(), "payload.texts", f"no such file: {texts_file}", source)
    per_request = _positive_int(payload.get("texts_per_request", 1), "payload.texts_per_request", source)
    repeat_ratio = _number(payload, "repeat_ratio", "payload.", source)
    if repeat_ratio is not None:
        _require(0 <= repeat_ratio <= 1, "payload.repeat_ratio", f"must be in [0, 1], got {repeat_ratio}", source)
    elif "hot_set" in payload:
        raise SLOSpecError(f"{source}: payload.hot_set: only means something with payload.repeat_ratio")
    hot_set = _positive_int(payload.get("hot_set", DEFAULT_HOT_SET), "payload.hot_set", source)
    return PayloadSpec(
        texts_file=texts_file,
        texts_per_request=per_request,
        repeat_ratio=repeat_ratio,
        hot_set=hot_set,
        documents_per_query=documents,
    )


def _parse_capacity(capacity: Mapping[str, Any], source: str) -> CapacitySpec:
    _no_unknown(capacity, {"start_users", "factor", "max_users", "step_duration"}, "capacity.", source)
    default = CapacitySpec()
    start = _positive_int(capacity.get("start_users", default.start_users), "capacity.start_users", source)
    maximum = _positive_int(capacity.get("max_users", default.max_users), "capacity.max_users", source)
    _require(maximum >= start, "capacity.max_users", f"must be >= start_users ({start}), got {maximum}", source)
    factor = _number(capacity, "factor", "capacity.", source)
    factor = default.factor if factor is None else factor
    _require(factor > 1, "capacity.factor", f"must be greater than 1, got {factor}", source)
    step_s = default.step_duration_s
    if "step_duration" in capacity:
        step_s = parse_duration_s(capacity["step_duration"], where="capacity.step_duration", source=source)
    return CapacitySpec(start_users=start, factor=factor, max_users=maximum, step_duration_s=step_s)


def _parse_cost(cost: Mapping[str, Any], source: str) -> CostSpec:
    _no_unknown(cost, {"price_per_hour_usd"}, "cost.", source)
    price = _number(cost, "price_per_hour_usd", "cost.", source, positive=True)
    _require(price is not None, "cost.price_per_hour_usd", "required: what the capacity under test costs", source)
    assert price is not None
    return CostSpec(price_per_hour_usd=price)


def _mapping(value: object, where: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SLOSpecError(f"{source}: {where}: expected a mapping, got {type(value).__name__}")
    return value


def _no_unknown(mapping: Mapping[str, Any], known: set[str], prefix: str, source: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in known)
    if unknown:
        raise SLOSpecError(
            f"{source}: {prefix}{unknown[0]}: unknown key", hint=f"known keys here: {', '.join(sorted(known))}"
        )


def _number(mapping: Mapping[str, Any], key: str, prefix: str, source: str, *, positive: bool = False) -> float | None:
    if key not in mapping:
        return None
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SLOSpecError(f"{source}: {prefix}{key}: must be a number, got {value!r}")
    if positive and value <= 0:
        raise SLOSpecError(f"{source}: {prefix}{key}: must be positive, got {value!r}")
    return float(value)


def _positive_int(value: object, where: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SLOSpecError(f"{source}: {where}: must be a positive integer, got {value!r}")
    return value


def _require(condition: bool, where: str, message: str, source: str) -> None:
    if not condition:
        raise SLOSpecError(f"{source}: {where}: {message}")
