"""The admin key and exposure: every restricted API refuses a missing or wrong key over HTTP and gRPC,
the right key opens them, the key appears in no log or output, and `serve` binds beyond loopback
only when asked explicitly, with a key the user chose."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serve_process import start_serve
from tritonstack.cli import main
from tritonstack.server import flags
from tritonstack.server.admin_key import AdminKey, KeySource, write_key_file
from tritonstack.server.exposure import (
    EMBEDDED_TRITON_VERSION,
    MIN_EXPOSED_KEY_LENGTH,
    admin_key_visible_locally,
    is_loopback,
    require_explicit_exposure,
)

WRONG_KEY = "not-the-admin-key-0123456789"


# -- the restricted APIs, per protocol ---------------------------------------------------------


@dataclass(frozen=True)
class HttpCall:
    api: str  # one of flags.RESTRICTED_APIS
    method: str
    path: str
    body: bytes | None = None
    read_only: bool = True  # safe to call with the right key, and expected to succeed

    def __str__(self) -> str:
        return f"{self.api}:{self.method} {self.path}"


@dataclass(frozen=True)
class GrpcCall:
    api: str
    name: str
    call: Callable[[grpcclient.InferenceServerClient, dict[str, str] | None], object]
    read_only: bool = True

    def __str__(self) -> str:
        return f"{self.api}:{self.name}"


# The state-changing calls are the dangerous ones (shared-memory registration was the
# way into CVE-2025-23319/23320); they are only ever sent with a missing or wrong key.
HTTP_CALLS = (
    HttpCall("model-repository", "POST", "/v2/repository/index", b"{}"),
    HttpCall("model-repository", "POST", "/v2/repository/models/tiny/unload", b"{}", read_only=False),
    HttpCall("logging", "GET", "/v2/logging"),
    HttpCall("logging", "POST", "/v2/logging", b'{"log_verbose_level": 1}', read_only=False),
    HttpCall("trace", "GET", "/v2/trace/setting"),
    HttpCall("trace", "GET", "/v2/models/tiny/trace/setting"),
    HttpCall("trace", "POST", "/v2/trace/setting", b'{"trace_level": ["TIMESTAMPS"]}', read_only=False),
    HttpCall("shared-memory", "GET", "/v2/systemsharedmemory/status"),
    HttpCall("shared-memory", "GET", "/v2/cudasharedmemory/status"),
    HttpCall(
        "shared-memory",
        "POST",
        "/v2/systemsharedmemory/region/probe/register",
        json.dumps({"key": "/tritonstack-admin-probe", "offset": 0, "byte_size": 64}).encode(),
        read_only=False,
    ),
)

GRPC_CALLS = (
    GrpcCall("model-repository", "get_model_repository_index", lambda c, h: c.get_model_repository_index(headers=h)),
    GrpcCall("model-repository", "unload_model", lambda c, h: c.unload_model("tiny", headers=h), read_only=False),
    GrpcCall("logging", "get_log_settings", lambda c, h: c.get_log_settings(headers=h)),
    GrpcCall(
        "logging",
        "update_log_settings",
        lambda c, h: c.update_log_settings({"log_verbose_level": 1}, headers=h),
        read_only=False,
    ),
    GrpcCall("trace", "get_trace_settings", lambda c, h: c.get_trace_settings(headers=h)),
    GrpcCall(
        "trace",
        "update_trace_settings",
        lambda c, h: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}, headers=h),
        read_only=False,
    ),
    GrpcCall(
        "shared-memory",
        "get_system_shared_memory_status",
        lambda c, h: c.get_system_shared_memory_status(headers=h),
    ),
    GrpcCall(
        "shared-memory",
        "get_cuda_shared_memory_status",
        lambda c, h: c.get_cuda_shared_memory_status(headers=h),
    ),
    GrpcCall(
        "shared-memory",
        "register_system_shared_memory",
        lambda c, h: c.register_system_shared_memory("probe", "/tritonstack-admin-probe", 64, headers=h),
        read_only=False,
    ),
)

# header value per case: None sends no header at all
BAD_KEYS = {"missing": None, "wrong": WRONG_KEY}


def http(base_url: str, call: HttpCall, key: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[flags.ADMIN_KEY_HEADER] = key
    request = urllib.request.Request(base_url + call.path, data=call.body, method=call.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def grpc(client: grpcclient.InferenceServerClient, call: GrpcCall, key: str | None) -> InferenceServerException | None:
    try:
        call.call(client, None if key is None else {flags.GRPC_ADMIN_KEY_HEADER: key})
    except InferenceServerException as error:
        return error
    return None


@pytest.fixture()
def grpc_client(triton: Any) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        yield client


def test_every_restricted_api_is_covered_on_both_protocols() -> None:
    for calls in (HTTP_CALLS, GRPC_CALLS):
        assert {c.api for c in calls} == set(flags.RESTRICTED_APIS)
        assert {c.api for c in calls if c.read_only} == set(flags.RESTRICTED_APIS)


@pytest.mark.integration
@pytest.mark.parametrize("bad", BAD_KEYS)
@pytest.mark.parametrize("call", HTTP_CALLS, ids=str)
def test_http_refuses_a_missing_or_wrong_key(triton: Any, call: HttpCall, bad: str) -> None:
    status, body = http(triton.http_url, call, BAD_KEYS[bad])
    assert status == 403, body
    assert "restricted" in body and flags.ADMIN_KEY_HEADER in body


@pytest.mark.integration
@pytest.mark.parametrize("bad", BAD_KEYS)
@pytest.mark.parametrize("call", GRPC_CALLS, ids=str)
def test_grpc_refuses_a_missing_or_wrong_key(grpc_client: Any, call: GrpcCall, bad: str) -> None:
    error = grpc(grpc_client, call, BAD_KEYS[bad])
    assert error is not None, f"{call} was accepted with a {bad} key"
    # Triton 2.51 answers a restricted gRPC protocol with UNAVAILABLE (not PERMISSION_DENIED).
    assert "restricted" in str(error.message()) and flags.GRPC_ADMIN_KEY_HEADER in str(error.message())


@pytest.mark.integration
@pytest.mark.parametrize("call", [c for c in HTTP_CALLS if c.read_only], ids=str)
def test_http_accepts_the_right_key(triton: Any, call: HttpCall) -> None:
    status, body = http(triton.http_url, call, triton.admin_key)
    assert status == 200, body


@pytest.mark.integration
@pytest.mark.parametrize("call", [c for c in GRPC_CALLS if c.read_only], ids=str)
def test_grpc_accepts_the_right_key(triton: Any, grpc_client: Any, call: GrpcCall) -> None:
    assert grpc(grpc_client, call, triton.admin_key) is None


@pytest.mark.integration
def test_grpc_takes_the_key_only_under_tritons_prefixed_header(triton: Any, grpc_client: Any) -> None:
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc_client.get_model_repository_index(headers={flags.ADMIN_KEY_HEADER: triton.admin_key})


@pytest.mark.integration
def test_health_metadata_and_statistics_need_no_key(triton: Any, grpc_client: Any) -> None:
    for path in ("/v2/health/ready", "/v2/models/tiny", "/v2/models/tiny/config", "/v2/models/tiny/stats"):
        status, body = http(triton.http_url, HttpCall("open", "GET", path), None)
        assert status == 200, (path, body)
    assert grpc_client.is_server_ready()
    assert grpc_client.get_model_metadata("tiny").name == "tiny"
    assert grpc_client.get_inference_statistics("tiny").model_stats


@pytest.mark.integration
def test_the_warning_names_the_version_the_embedded_server_runs(triton: Any) -> None:
    status, body = http(triton.http_url, HttpCall("open", "GET", "/v2"), None)
    assert status == 200
    assert json.loads(body)["version"] == EMBEDDED_TRITON_VERSION


@pytest.mark.integration
def test_the_key_never_reaches_tritons_log(triton: Any, grpc_client: Any) -> None:
    """At --log-verbose=0, after refused and accepted calls on both protocols (and every test before this one)."""
    for key in (triton.admin_key, WRONG_KEY, None):
        http(triton.http_url, HTTP_CALLS[0], key)
        grpc(grpc_client, GRPC_CALLS[0], key)
    assert "--log-verbose=0" in flags.TritonFlags(model_repository="/m", admin_key="k").args()
    log = triton.log_path.read_text(errors="replace")
    assert "successfully loaded 'tiny'" in log  # the right file, and Triton wrote to it
    assert triton.admin_key not in log and WRONG_KEY not in log


# -- the key: where it comes from, the file a generated one goes to ----------------------------


def test_the_key_comes_from_the_flag_then_the_environment_then_a_fresh_random_one() -> None:
    env = {flags.ADMIN_KEY_ENV: "from-the-environment"}
    assert AdminKey.resolve("from-the-flag", env) == AdminKey("from-the-flag", KeySource.FLAG)
    assert AdminKey.resolve(None, env) == AdminKey("from-the-environment", KeySource.ENVIRONMENT)
    generated = [AdminKey.resolve(None, {flags.ADMIN_KEY_ENV: ""}) for _ in range(2)]  # empty counts as unset
    assert all(k.source is KeySource.GENERATED and not k.chosen for k in generated)
    assert generated[0].value != generated[1].value and len(generated[0].value) >= 32


def test_a_keys_repr_leaves_the_key_out() -> None:
    key = AdminKey("s3cret-admin-key-value", KeySource.FLAG)
    assert "s3cret" not in repr(key) and "s3cret" not in str(key)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_key_file_is_readable_only_by_the_user_whatever_the_umask(tmp_path: Path) -> None:
    key = AdminKey.resolve(None, {})
    previous = os.umask(0)
    try:
        path = write_key_file(key, tmp_path / "state" / "admin-key")
    finally:
        os.umask(previous)
    assert _mode(path) == 0o600 and path.stat().st_uid == os.getuid()
    assert path.read_text() == key.value + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["admin-key"]  # no staging file left behind


def test_the_key_file_replaces_what_was_there_without_writing_through_it(tmp_path: Path) -> None:
    readable = tmp_path / "admin-key"
    readable.write_text("old key\n")
    readable.chmod(0o644)
    write_key_file(AdminKey("new-key-0123456789abcdef", KeySource.GENERATED), readable)
    assert _mode(readable) == 0o600 and readable.read_text() == "new-key-0123456789abcdef\n"
    # A symlink planted at the path is replaced; the file it pointed to stays as it was.
    target = tmp_path / "elsewhere"
    target.write_text("not yours\n")
    link = tmp_path / "linked-key"
    link.symlink_to(target)
    write_key_file(AdminKey("another-key-0123456789ab", KeySource.GENERATED), link)
    assert not link.is_symlink() and _mode(link) == 0o600
    assert target.read_text() == "not yours\n"


# -- exposure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("", False),
        ("triton.example.com", False),
    ],
)
def test_only_loopback_addresses_count_as_local(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_the_admin_key_is_visible_to_local_users_unless_proc_hides_other_users_processes() -> None:
    mounts = "sysfs /sys sysfs rw 0 0\nproc /proc proc rw,nosuid,nodev,noexec,relatime{} 0 0\n"
    assert admin_key_visible_locally(mounts.format(""))
    assert admin_key_visible_locally(mounts.format(",hidepid=0"))
    for hidden in ("hidepid=2", "hidepid=invisible", "hidepid=1", "hidepid=noaccess"):
        assert not admin_key_visible_locally(mounts.format(f",{hidden}")), hidden
    assert admin_key_visible_locally("")  # no /proc mount found: assume the worst


@pytest.mark.parametrize(
    ("visible", "allowed", "refused"), [(True, False, True), (True, True, False), (False, False, False)]
)
def test_expose_where_local_users_can_read_the_key_needs_the_operators_acceptance(
    visible: bool, allowed: bool, refused: bool
) -> None:
    from tritonstack.server.errors import ExposureRefusedError

    key = AdminKey.resolve(GOOD_KEY)

    def expose() -> None:
        require_explicit_exposure(
            "0.0.0.0", expose=True, key=key, allow_local_key_exposure=allowed, key_visible=visible
        )

    if not refused:
        expose()
        return
    with pytest.raises(ExposureRefusedError, match="every local user of this host can read") as info:
        expose()
    assert info.value.hint and "hidepid=2" in info.value.hint and "--allow-local-key-exposure" in info.value.hint


def test_serve_refuses_expose_where_the_key_is_visible_unless_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tritonstack.commands.serve as serve_command

    monkeypatch.setattr(serve_command, "admin_key_visible_locally", lambda: True)
    monkeypatch.setenv(flags.ADMIN_KEY_ENV, GOOD_KEY)
    common = ["--repository", str(tmp_path / "nowhere"), "--log-file", str(tmp_path / "t.log")]
    assert main(["serve", *common, "--bind", "0.0.0.0", "--expose"]) == 1
    err = capsys.readouterr().err
    assert "refusing to bind 0.0.0.0: the admin key would be on Triton's command line" in err, err
    assert not list(tmp_path.iterdir())


SHORT_KEY = "x" * (MIN_EXPOSED_KEY_LENGTH - 1)
GOOD_KEY = "a-key-long-enough-0123456789"


@pytest.mark.parametrize(
    ("argv", "env_key", "message", "hint"),
    [
        (["--bind", "0.0.0.0"], None, "refusing to bind 0.0.0.0", "--expose"),
        (["--bind", "0.0.0.0"], GOOD_KEY, "refusing to bind 0.0.0.0", "--expose"),  # a key alone is no consent
        (["--bind", "192.168.1.5", "--expose"], None, "--expose needs an admin key you chose", flags.ADMIN_KEY_ENV),
        (["--bind", "::", "--expose"], SHORT_KEY, f"has {len(SHORT_KEY)} characters", "openssl rand"),
        (["--bind", "::", "--expose", "--admin-key", SHORT_KEY], GOOD_KEY, "from --admin-key has", "openssl rand"),
    ],
    ids=["no-expose", "no-expose-with-key", "generated-key", "short-env-key", "short-flag-key"],
)
def test_serve_refuses_to_expose_unless_asked_with_a_chosen_key(
    argv: list[str],
    env_key: str | None,
    message: str,
    hint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if env_key is None:
        monkeypatch.delenv(flags.ADMIN_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(flags.ADMIN_KEY_ENV, env_key)
    # A repository that does not exist: the refusal comes before anything else is looked at.
    common = ["--repository", str(tmp_path / "nowhere"), "--log-file", str(tmp_path / "t.log")]
    assert main(["serve", *common, *argv]) == 1
    out, err = capsys.readouterr()
    error_line, hint_line = err.splitlines()[:2]
    assert error_line.startswith("error: ") and message in error_line, err
    assert hint_line.startswith("hint: ") and hint in hint_line, err
    assert not list(tmp_path.iterdir()), "a refused serve writes nothing (no key file, no log)"
    for key in (GOOD_KEY, SHORT_KEY):
        assert key not in out + err


# -- the serve command, end to end --------------------------------------------------------------


@dataclass
class Served:
    stdout: str
    stderr: str
    http_url: str
    log: str


def serve(extra: list[str], tmp_path: Path, env: dict[str, str], check: Callable[[str], None]) -> Served:
    """Run `tritonstack serve` until ready, call ``check(http_url)``, stop it with SIGINT; everything it said."""
    log_file = tmp_path / "logs" / "triton.log"
    repository = Path(env.pop("REPOSITORY"))
    # umask 0: the key file's mode must not depend on the caller's umask
    process, head = start_serve(repository, log_file, *extra, env=env, umask=0, stderr=subprocess.PIPE)
    try:
        url = re.search(r"^HTTP +(\S+)$", head, re.M)
        assert url, head
        check(url.group(1))
    finally:
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, head + rest + stderr
    return Served(head + rest, stderr, url.group(1), log_file.read_text(errors="replace"))


def _index_status(http_url: str, key: str | None) -> int:
    return http(http_url, HTTP_CALLS[0], key)[0]


@pytest.mark.integration
def test_serve_writes_a_generated_key_to_a_private_file_and_prints_only_its_path(
    tiny_repository: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != flags.ADMIN_KEY_ENV}
    key_file = tmp_path / "logs" / "admin-key"  # default: next to the log file
    statuses: dict[str, int] = {}

    def check(http_url: str) -> None:
        key = key_file.read_text().strip()
        statuses.update(right=_index_status(http_url, key), missing=_index_status(http_url, None))

    served = serve([], tmp_path, {**env, "REPOSITORY": str(tiny_repository)}, check)
    assert statuses == {"right": 200, "missing": 403}
    assert f"admin    key in {key_file} (generated for this run, readable only by you)" in served.stdout
    assert _mode(key_file) == 0o600 and key_file.stat().st_uid == os.getuid()
    key = key_file.read_text().strip()
    assert len(key) >= 32
    assert key not in served.stdout and key not in served.stderr and key not in served.log
    assert "warning" not in served.stderr  # loopback: nothing to warn about


@pytest.mark.integration
def test_serve_exposes_only_when_asked_and_says_what_that_means(tiny_repository: Path, tmp_path: Path) -> None:
    key = "exposed-admin-key-" + os.urandom(8).hex()
    env = {**os.environ, flags.ADMIN_KEY_ENV: key, "REPOSITORY": str(tiny_repository)}
    statuses: dict[str, int] = {}

    def check(http_url: str) -> None:
        statuses.update(right=_index_status(http_url, key), wrong=_index_status(http_url, WRONG_KEY))

    # this host's /proc has no hidepid (checked below): exposing needs the operator's acceptance too
    served = serve(["--bind", "0.0.0.0", "--expose", "--allow-local-key-exposure"], tmp_path, env, check)
    assert statuses == {"right": 200, "wrong": 403}
    warning = served.stderr
    assert warning.startswith("warning: Triton will listen on 0.0.0.0: other hosts can reach it."), warning
    if admin_key_visible_locally():
        assert "note: Triton 2.51 takes the admin key only on its command line" in warning
        assert "hidepid=2" in warning
    assert f"Triton {EMBEDDED_TRITON_VERSION}" in warning and "2025-2026 Triton\n  security fixes" in warning
    assert "docs/deploy.md" in warning
    assert f"admin    key from ${flags.ADMIN_KEY_ENV}" in served.stdout
    assert not (tmp_path / "logs" / "admin-key").exists(), "a key the user chose is not written anywhere"
    assert key not in served.stdout and key not in served.stderr and key not in served.log


def test_the_library_binds_beyond_loopback_on_the_same_terms_as_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonstack.server import EmbeddedServer
    from tritonstack.server.errors import ExposureRefusedError

    monkeypatch.delenv(flags.ADMIN_KEY_ENV, raising=False)
    with pytest.raises(ExposureRefusedError, match=r"refusing to bind 0\.0\.0\.0"):
        EmbeddedServer(tmp_path, bind_address="0.0.0.0")
    with pytest.raises(ExposureRefusedError, match="needs an admin key you chose"):
        EmbeddedServer(tmp_path, bind_address="0.0.0.0", expose=True)
    if admin_key_visible_locally():  # other local users could read the key on Triton's command line
        with pytest.raises(ExposureRefusedError, match="every local user of this host can read"):
            EmbeddedServer(tmp_path, bind_address="0.0.0.0", expose=True, admin_key="k" * 32)
    exposed = EmbeddedServer(
        tmp_path, bind_address="0.0.0.0", expose=True, admin_key="k" * 32, allow_local_key_exposure=True
    )
    assert exposed.admin_key == "k" * 32
    assert EmbeddedServer(tmp_path).bind_address == flags.LOOPBACK  # loopback needs neither


def test_an_address_the_embedded_server_cannot_bind_is_a_typed_error(tmp_path: Path) -> None:
    from tritonstack.server import EmbeddedServer, ServerStartError

    with pytest.raises(ServerStartError, match="IPv4 addresses only") as error:
        EmbeddedServer(tmp_path, bind_address="::1").start()
    assert error.value.hint and flags.LOOPBACK in error.value.hint


def test_a_child_that_cannot_be_started_is_a_typed_error(tmp_path: Path) -> None:
    from tritonstack._process import ChildProcess
    from tritonstack.server import ServerStartError

    child = ChildProcess("Triton", [str(tmp_path / "no-such-binary")], tmp_path / "log")
    with pytest.raises(ServerStartError, match=r"Triton could not be started \(.*no-such-binary\): No such file"):
        child.start(lambda: True, 5.0, ServerStartError)
