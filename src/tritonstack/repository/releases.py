"""Releases of a text-in model: which exported versions Triton serves, and under which names.

Every export of NAME is a release, numbered by its version folder (the same
number in ``NAME``, ``NAME_tokenizer``, ``NAME_encoder`` and ``NAME_postprocess``).
At most two are served: the stable release and a candidate.

The trap: an ensemble's ``config.pbtxt`` is shared by all of its versions and
its steps name the version of each step, so "version 2 of NAME" would still run
whatever versions its steps name. So every served release V gets a text-in
ensemble of its own, ``NAME_vV`` (one version folder ``V/``, every step pinned
to version V), and ``NAME`` is the stable release's: steps pinned to it and its
``version_policy`` serving only that number, so the model version Triton
reports for ``NAME`` is the release that answered. The steps serve exactly the
served releases (``version_policy: specific``). Retired releases stay on disk
(their export reports, a way back) and are not loaded. ``docs/releases.md``
says why this layout, and ``validate`` checks it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack import _faults
from tritonstack.in_triton import contract
from tritonstack.repository import lock, paths, staging
from tritonstack.repository.config import CONFIG_FILENAME, copy_config, parameter, parse, write_config
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.layouts import base_name, step_models
from tritonstack.repository.python_models import add_versions, counts_tokens


@dataclass(frozen=True)
class Releases:
    """The releases of one text-in model: ``stable`` and ``candidate`` are version numbers."""

    name: str
    stable: int
    candidate: int | None = None
    versions: tuple[int, ...] = ()  # every release on disk, oldest first

    @property
    def served(self) -> tuple[int, ...]:
        """The releases Triton serves, stable first."""
        return (self.stable,) if self.candidate is None else (self.stable, self.candidate)

    @property
    def retired(self) -> tuple[int, ...]:
        return tuple(v for v in self.versions if v not in self.served)


def served_versions(config: Any, on_disk: Sequence[int]) -> tuple[int, ...]:
    """The versions Triton serves of a model whose config is ``config`` (protobuf) and folders ``on_disk``."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        return tuple(sorted(v for v in policy.specific.versions))
    if which == "all":
        return tuple(sorted(on_disk))
    newest = policy.latest.num_versions if which == "latest" else 1
    return tuple(sorted(on_disk)[-newest:]) if on_disk else ()


def _pin(config: Any, *, name: str, serve: Sequence[int], steps_version: int | None = None) -> Any:
    pinned = copy_config(config)
    pinned.name = name
    pinned.version_policy.specific.versions[:] = list(serve)
    if steps_version is not None:
        for step in pinned.ensemble_scheduling.step:
            step.model_version = steps_version
    return pinned


def release_configs(text_in: Any, steps: Sequence[Any], stable: int, candidate: int | None) -> list[Any]:
    """The configs (protobuf) that serve ``stable`` and ``candidate`` of the text-in ensemble ``text_in``.

    ``steps`` are the configs of its steps. Pure: returns new configs, in the order steps, ``NAME``, then
    ``NAME_vV`` for each served release.
    """
    name = text_in.name
    served = (stable,) if candidate is None else (stable, candidate)
    configs = [_pin(step, name=step.name, serve=sorted(served)) for step in steps]
    configs.append(_pin(text_in, name=name, serve=[stable], steps_version=stable))
    for release in served:
        release_config = _pin(
            text_in, name=contract.release_name(name, release), serve=[release], steps_version=release
        )
        release_config.parameters[contract.RELEASE_OF_PARAMETER].string_value = name
        release_config.parameters[contract.RELEASE_PARAMETER].string_value = str(release)
        configs.append(release_config)
    return configs


def _read_config(path: Path) -> Any:
    try:
        return parse(path.read_text())
    except OSError as error:
        raise RepositoryError(f"cannot read {path}: {error.strerror}") from error


def _version_numbers(model_dir: Path) -> tuple[int, ...]:
    return tuple(int(v.name) for v in paths.versions(model_dir))


def read_releases(repository: Path, name: str) -> Releases:
    """The releases of ``name`` in ``repository``; a repository from before releases has its newest as stable."""
    config_path = Path(repository) / name / CONFIG_FILENAME
    if not config_path.is_file():
        raise RepositoryError(
            f"no model {name!r} in {repository}",
            hint=f"export it first: tritonstack export MODEL --name {name} --repository {repository}",
        )
    config = _read_config(config_path)
    if config.platform != "ensemble":
        raise RepositoryError(f"{name!r} is not a text-in model (an ensemble)", hint="name the model `export` wrote")
    versions = _version_numbers(Path(repository) / name)
    served = served_versions(config, versions)
    if not served:
        raise RepositoryError(f"{name!r} has no release (version folder)", hint="re-export the model")
    stable = served[-1]
    candidates = [
        v
        for v in versions
        if v != stable and (Path(repository) / contract.release_name(name, v) / CONFIG_FILENAME).is_file()
    ]
    return Releases(name, stable, max(candidates, default=None), versions)


def step_names(text_in: Any) -> list[str]:
    """The models a release of ``text_in`` runs: its steps, and for a fused step the encoder and tokenizer whose
    files it reads."""
    name = base_name(text_in)
    names = step_models(text_in)
    if contract.fused_name(name) in names:
        names += [contract.encoder_name(name), contract.tokenizer_name(name)]
    return names


def family_names(repository: Path, text_in: Any) -> list[str]:
    """Every step model of ``text_in`` in ``repository``: those its layout runs, and those of the other layout
    that an earlier export or tune left there (idle, but loaded: they must serve the served releases too)."""
    name = base_name(text_in)
    steps = step_names(text_in)
    kept = (contract.encoder_name(name), contract.tokenizer_name(name), contract.postprocess_name(name))
    others = [m for m in (*kept, contract.fused_name(name)) if m not in steps]
    return steps + [m for m in others if (Path(repository) / m / CONFIG_FILENAME).is_file()]


def stale_release_models(repository: Path, name: str, served: Sequence[int]) -> list[Path]:
    """The per-release ensembles of ``name`` in ``repository`` that serve none of ``served``."""
    stale = []
    for model_dir in sorted(Path(repository).iterdir()):
        config_path = model_dir / CONFIG_FILENAME
        if not model_dir.name.startswith(f"{name}_v") or not config_path.is_file():
            continue
        config = _read_config(config_path)
        if parameter(config, contract.RELEASE_OF_PARAMETER) != name:
            continue
        if int(parameter(config, contract.RELEASE_PARAMETER) or 0) not in served:
            stale.append(model_dir)
    return stale


def install_configs(repository: Path, configs: Sequence[Any]) -> None:
    """Write ``configs`` into ``repository``, in order, each by an atomic rename. A model folder that is not
    there yet (a per-release ensemble: its config and one empty version folder, its release) is built in a
    staging folder and renamed into place whole: Triton never sees a model folder without its config."""
    with contextlib.ExitStack() as stack:
        staged: Path | None = None
        for config in configs:
            model_dir = Path(repository) / config.name
            release = parameter(config, contract.RELEASE_PARAMETER)
            if model_dir.is_dir():
                if release is not None:
                    (model_dir / release).mkdir(exist_ok=True)
                write_config(model_dir, config)
                continue
            if staged is None:
                staged = stack.enter_context(staging.staging_dir(repository))
            new_dir = staged / config.name
            new_dir.mkdir()
            if release is not None:
                (new_dir / release).mkdir()
            write_config(new_dir, config)
            os.replace(new_dir, model_dir)


def _tokens_as_served(repository: Path, ensemble: Any, steps: Mapping[str, Any]) -> Any:
    """``ensemble`` (a copy where it changes) answering ``TOKENS`` exactly where its release can: its first step,
    the one that tokenizes, lists the output and that release's ``model.py`` produces it. A release exported
    before token counts keeps its own ``model.py``, which answers without it, while the step configs that a later
    export writes are shared by every version. Mapped anyway, Triton 2.51 answers a call that asks for TOKENS
    without it (tried: the SDK's ``usage=`` then fails); unmapped, the model does not list it and ``usage`` says
    not counted. A release that counts gets the output back (a promoted candidate of an older stable release)."""
    token_names = {contract.TOKENS_OUTPUT}
    first = ensemble.ensemble_scheduling.step[0]
    step = steps.get(first.model_name)
    listed = [t for t in (step.output if step is not None else ()) if t.name in token_names]
    counts = bool(listed) and (
        first.model_version == -1 or counts_tokens(Path(repository) / first.model_name / str(first.model_version))
    )
    if counts == any(t.name in token_names for t in ensemble.output):
        return ensemble
    served = copy_config(ensemble)
    if counts:
        served.output.add().CopyFrom(listed[0])
        served.ensemble_scheduling.step[0].output_map[contract.TOKENS_OUTPUT] = contract.TOKENS_OUTPUT
        return served
    kept = [t for t in served.output if t.name not in token_names]
    del served.output[:]
    served.output.extend(kept)
    for served_step in served.ensemble_scheduling.step:
        for key in [k for k, v in served_step.output_map.items() if v in token_names]:
            del served_step.output_map[key]
    return served


def install_releases(repository: Path, name: str, configs: Sequence[Any], served: Sequence[int]) -> None:
    """Install ``configs`` (``release_configs``' order: the steps, then the ensembles ``NAME`` and ``NAME_vV``)
    so that Triton finds every served ensemble's steps served at every moment, a crash included: the steps
    first serve what they served and what they will serve, then the ensembles are repinned, then the per-release
    ensembles of releases no longer ``served`` are retired, and only then are the steps narrowed."""
    repository = Path(repository)
    steps = [c for c in configs if c.platform != "ensemble"]
    by_name = {step.name: step for step in steps}
    ensembles = [_tokens_as_served(repository, c, by_name) for c in configs if c.platform == "ensemble"]
    widened = []
    for step in steps:
        path = repository / step.name / CONFIG_FILENAME
        now = served_versions(_read_config(path), _version_numbers(path.parent)) if path.is_file() else ()
        widened.append(_pin(step, name=step.name, serve=sorted({*now, *step.version_policy.specific.versions})))
    install_configs(repository, widened)
    _faults.point("release-widened")
    install_configs(repository, ensembles)
    _faults.point("release-repinned")
    stale = stale_release_models(repository, name, served)
    if stale:
        with staging.staging_dir(repository) as staged:
            for model_dir in stale:
                staging.retire(model_dir, staged)
    _faults.point("release-retired")
    install_configs(repository, steps)


def write_releases(repository: Path, name: str, stable: int, candidate: int | None) -> Releases:
    """Serve ``stable`` and ``candidate`` of ``name``, rewriting its configs; retire every other release."""
    repository = Path(repository)
    with lock.locked(repository, f"release {name}"):
        current = read_releases(repository, name)
        for release in (stable, candidate):
            if release is not None and release not in current.versions:
                raise RepositoryError(
                    f"{name!r} has no release {release}",
                    hint=f"its releases: {', '.join(map(str, current.versions))} (tritonstack release list)",
                )
        text_in = _read_config(repository / name / CONFIG_FILENAME)
        steps = [_read_config(repository / step / CONFIG_FILENAME) for step in family_names(repository, text_in)]
        served = (stable,) if candidate is None else (stable, candidate)
        for step in steps:
            if step.backend == "python" and step.name != contract.tokenizer_name(name):
                add_versions(repository, name, step.name, served)  # a release exported in the other layout
            missing = [v for v in served if not (repository / step.name / str(v)).is_dir()]
            if missing:
                raise RepositoryError(f"{step.name!r} has no version folder for release {missing[0]}")
        try:
            install_releases(repository, name, release_configs(text_in, steps, stable, candidate), served)
        except OSError as error:
            raise RepositoryError(f"writing the releases of {name!r} into {repository} failed: {error}") from error
        return read_releases(repository, name)


def promote(repository: Path, name: str) -> Releases:
    """Make the candidate of ``name`` its stable release and retire the old stable one."""
    with lock.locked(repository, f"release promote {name}"):
        current = read_releases(repository, name)
        if current.candidate is None:
            raise RepositoryError(
                f"{name!r} has no candidate release to promote",
                hint="a second `tritonstack export` of the same name makes one",
            )
        return write_releases(repository, name, current.candidate, None)


def rollback(repository: Path, name: str) -> Releases:
    """Retire the candidate of ``name``; its stable release serves alone."""
    with lock.locked(repository, f"release rollback {name}"):
        current = read_releases(repository, name)
        if current.candidate is None:
            raise RepositoryError(f"{name!r} has no candidate release to roll back", hint="tritonstack release list")
        return write_releases(repository, name, current.stable, None)
