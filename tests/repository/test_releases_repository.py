"""Releases in the repository: two exports of a name are both served, each end to end; promote and roll back.

Against the real embedded Triton. The two releases are tiny models built with different seeds, so each
release's answers are its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import tinymodels
from tritonstack.repository import releases
from tritonstack.repository.config import parse, render_proto
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.validate import check_repository, validate_repository

pytestmark = pytest.mark.integration

TEXTS = ["hello world", "the quick brown fox", "rain"]


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository where ``rel`` was exported twice, from tiny models with different weights."""
    root = tmp_path_factory.mktemp("releases")
    repository = root / "model_repository"
    for seed in (0, 3):
        model_dir = tinymodels.build(root / f"seed{seed}", "bert", "feature-extraction", seed=seed)
        tinymodels.export_fp32(model_dir, repository, "rel")
    return repository


def embed(url: str, model: str, texts: list[str] = TEXTS) -> tuple[np.ndarray, str]:
    """The embeddings ``model`` returns through plain tritonclient, and the model version Triton says answered."""
    array = np.array([[t.encode()] for t in texts], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    with grpcclient.InferenceServerClient(url) as raw:
        result = raw.infer(model, [tensor])
    return result.as_numpy("EMBEDDING"), result.get_response().model_version


@pytest.fixture(scope="module")
def served(two_releases: Path) -> Iterator[Any]:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(two_releases) as server:
        yield server


def test_a_second_export_is_a_candidate_beside_the_stable_release(two_releases: Path) -> None:
    state = releases.read_releases(two_releases, "rel")
    assert (state.stable, state.candidate, state.versions, state.retired) == (1, 2, (1, 2), ())
    check_repository(two_releases)
    assert {"rel", "rel_v1", "rel_v2", "rel_encoder", "rel_tokenizer"} <= set(validate_repository(two_releases).models)


def test_both_releases_are_served_each_with_its_own_outputs(served: Any) -> None:
    stable, stable_version = embed(served.grpc_url, "rel")
    first, first_version = embed(served.grpc_url, "rel_v1")
    second, second_version = embed(served.grpc_url, "rel_v2")
    assert (stable_version, first_version, second_version) == ("1", "1", "2")
    np.testing.assert_allclose(stable, first, atol=1e-6)
    # different weights: each release runs its own tokenizer -> encoder, not the newest encoder
    assert np.abs(first - second).max() > 1e-2
    cosine = np.sum(first * second, axis=1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    assert cosine.max() < 0.999


def _copy(repository: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(repository, tmp_path / "model_repository"))


def test_promote_makes_the_candidate_stable_and_serves_it(two_releases: Path, served: Any, tmp_path: Path) -> None:
    from tritonstack.server import EmbeddedServer

    candidate, _ = embed(served.grpc_url, "rel_v2")
    repository = _copy(two_releases, tmp_path)
    state = releases.promote(repository, "rel")
    assert (state.stable, state.candidate, state.retired) == (2, None, (1,))
    assert not (repository / "rel_v1").exists() and (repository / "rel" / "1").is_dir()  # retired, kept
    check_repository(repository)
    with EmbeddedServer(repository) as server:
        answer, version = embed(server.grpc_url, "rel")
        assert version == "2"
        np.testing.assert_allclose(answer, candidate, atol=1e-6)
        assert "rel_v1" not in server.ready_models()
    with pytest.raises(RepositoryError, match="no candidate"):
        releases.promote(repository, "rel")


def test_rollback_retires_the_candidate(two_releases: Path, served: Any, tmp_path: Path) -> None:
    from tritonstack.server import EmbeddedServer

    stable, _ = embed(served.grpc_url, "rel_v1")
    repository = _copy(two_releases, tmp_path)
    state = releases.rollback(repository, "rel")
    assert (state.stable, state.candidate, state.retired) == (1, None, (2,))
    check_repository(repository)
    with EmbeddedServer(repository) as server:
        answer, version = embed(server.grpc_url, "rel")
        assert version == "1"
        np.testing.assert_allclose(answer, stable, atol=1e-6)
        assert "rel_v2" not in server.ready_models()


def test_validate_names_an_ensemble_whose_versions_would_run_another_release(
    two_releases: Path, tmp_path: Path
) -> None:
    repository = _copy(two_releases, tmp_path)
    config_path = repository / "rel" / "config.pbtxt"
    config = parse(config_path.read_text())
    config.version_policy.specific.versions[:] = [1, 2]  # "version 2 of rel" would still run release 1's steps
    config_path.write_text(render_proto(config))
    unpinned = parse((repository / "rel_v2" / "config.pbtxt").read_text())
    for step in unpinned.ensemble_scheduling.step:
        step.model_version = -1
    (repository / "rel_v2" / "config.pbtxt").write_text(render_proto(unpinned))
    problems = validate_repository(repository).problems
    assert "rel: serves versions [1, 2] but its steps run release 1" in " ".join(problems)
    assert any(
        p.startswith("rel_v2: step rel_tokenizer serves versions [1, 2] but the step names none") for p in problems
    )
    assert any(p.startswith("rel_v2: parameter release 2 differs") for p in problems)


def test_a_release_that_is_not_there_is_refused(two_releases: Path, tmp_path: Path) -> None:
    repository = _copy(two_releases, tmp_path)
    with pytest.raises(RepositoryError, match="no release 7") as caught:
        releases.write_releases(repository, "rel", 1, 7)
    assert "tritonstack release list" in (caught.value.hint or "")
    with pytest.raises(RepositoryError, match="no model 'absent'"):
        releases.read_releases(repository, "absent")


def test_a_third_export_replaces_an_unjudged_candidate(two_releases: Path, tmp_path: Path) -> None:
    repository = _copy(two_releases, tmp_path)
    model_dir = tinymodels.build(tmp_path / "seed5", "bert", "feature-extraction", seed=5)
    tinymodels.export_fp32(model_dir, repository, "rel")
    state = releases.read_releases(repository, "rel")
    assert (state.stable, state.candidate, state.retired) == (1, 3, (2,))
    assert not (repository / "rel_v2").exists()
    check_repository(repository)


def test_the_sdk_splits_traffic_by_weight_and_says_which_release_answered(served: Any) -> None:
    from tritonstack.client import Client, Release, TrafficSplit

    references = {v: embed(served.grpc_url, f"rel_v{v}", TEXTS[:1])[0] for v in (1, 2)}
    calls, weight = 400, 0.25
    with Client(served.grpc_url) as client:
        split = TrafficSplit("rel", baseline=1, candidate=2, weight=weight)
        answers = [client.embed_release(TEXTS[:1], split) for _ in range(calls)]
        pinned = client.embed_release(TEXTS[:1], Release("rel", 2))
    for answer in answers:  # each answer is its release's own
        np.testing.assert_allclose(answer.value, references[answer.release.version], atol=1e-5)
    to_candidate = sum(a.release.version == 2 for a in answers)
    spread = 4 * (calls * weight * (1 - weight)) ** 0.5
    assert calls * weight - spread <= to_candidate <= calls * weight + spread
    assert pinned.release == Release("rel", 2)
    np.testing.assert_allclose(pinned.value, references[2], atol=1e-5)


def test_sticky_keys_always_reach_the_same_release(served: Any) -> None:
    from tritonstack.client import Client, TrafficSplit

    references = {v: embed(served.grpc_url, f"rel_v{v}", TEXTS[:1])[0] for v in (1, 2)}
    split = TrafficSplit("rel", baseline=1, candidate=2, weight=0.5)
    with Client(served.grpc_url) as client:
        for user in range(12):
            answers = [client.embed_release(TEXTS[:1], split, key=f"user-{user}") for _ in range(5)]
            assert len({a.release for a in answers}) == 1
            for answer in answers:
                np.testing.assert_allclose(answer.value, references[answer.release.version], atol=1e-5)


def test_the_release_command_lists_promotes_and_rolls_back(
    two_releases: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.cli import main

    repository = _copy(two_releases, tmp_path)
    common = ["--repository", str(repository), "--model", "rel"]
    assert main(["release", "list", *common]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split() == ["1", "stable", "rel,", "rel_v1"] and listed[2].split() == ["2", "candidate", "rel_v2"]
    assert main(["release", "promote", *common]) == 0
    promoted = capsys.readouterr().out.splitlines()
    assert promoted[1].split() == ["1", "retired", "-"] and promoted[2].split() == ["2", "stable", "rel,", "rel_v2"]
    assert main(["release", "rollback", *common]) == 1
    assert "no candidate release to roll back" in capsys.readouterr().err
    assert main(["release", "list", "--repository", str(repository), "--model", "nope"]) == 1
    assert "hint: export it first" in capsys.readouterr().err


def test_the_async_client_targets_a_release_too(served: Any) -> None:
    import asyncio

    from tritonstack.client import AsyncClient, Release, TrafficSplit

    reference = embed(served.grpc_url, "rel_v2", TEXTS[:1])[0]

    async def calls() -> tuple[Any, Any]:
        async with AsyncClient(served.grpc_url) as client:
            pinned = await client.embed_release(TEXTS[:1], Release("rel", 2))
            everyone = await client.embed_release(TEXTS[:1], TrafficSplit("rel", 1, 2, weight=1.0), key="anyone")
            return pinned, everyone

    pinned, everyone = asyncio.run(calls())
    assert pinned.release == everyone.release == Release("rel", 2)
    np.testing.assert_allclose(pinned.value, reference, atol=1e-5)
    np.testing.assert_allclose(everyone.value, reference, atol=1e-5)
