"""encoder_runner.CpuTurns across real OS processes: one instance computes at a time, and a killed one
lets the others go on.

The Triton stub of each instance is a process of its own, a child of the server; here the children of
the test process stand in for them (the lock file is named after the parent's pid). Started with
``spawn``, as the stubs are fresh interpreters, not forks.
"""

from __future__ import annotations

import fcntl
import itertools
import multiprocessing
import os
import signal
import stat
import time
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from tritonstack.in_triton.models.encoder_runner import CpuTurns, NoTurns

MODEL = "tiny_fused"
TURNS = 5  # per process
HOLD_S = 0.05  # how long each turn computes
SPAWN = multiprocessing.get_context("spawn")


def take_turns(directory: str, log: str, start: Barrier, with_turns: bool) -> None:
    """Hold the turn ``TURNS`` times, ``HOLD_S`` each; append ``pid enter exit`` (monotonic s) to ``log``."""
    turns = CpuTurns(MODEL, directory) if with_turns else NoTurns()
    start.wait()
    for _ in range(TURNS):
        with turns:
            entered = time.monotonic()
            time.sleep(HOLD_S)
            left = time.monotonic()
        with open(log, "a") as out:  # one short O_APPEND write per line: the lines do not interleave
            out.write(f"{os.getpid()} {entered} {left}\n")
    turns.close()


def hold_forever(directory: str, holding: Event) -> None:
    with CpuTurns(MODEL, directory):
        holding.set()
        time.sleep(600)


def wait_for_turn(directory: str, got_it: Event) -> None:
    with CpuTurns(MODEL, directory):
        got_it.set()


def intervals(log: Path) -> list[tuple[int, float, float]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return sorted(((int(pid), float(enter), float(leave)) for pid, enter, leave in rows), key=lambda r: r[1])


def overlaps(log: Path) -> int:
    """How many turns began before the previous one (in time) ended."""
    rows = intervals(log)
    return sum(1 for before, after in itertools.pairwise(rows) if after[1] < before[2])


def run_two(tmp_path: Path, *, with_turns: bool) -> Path:
    log = tmp_path / "turns.log"
    start = SPAWN.Barrier(2)
    workers = [SPAWN.Process(target=take_turns, args=(str(tmp_path), str(log), start, with_turns)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return log


def test_two_processes_never_compute_at_the_same_time(tmp_path: Path) -> None:
    log = run_two(tmp_path, with_turns=True)
    rows = intervals(log)
    assert len(rows) == 2 * TURNS and len({pid for pid, _, _ in rows}) == 2
    assert overlaps(log) == 0, rows


def test_without_turns_the_same_two_processes_do_overlap(tmp_path: Path) -> None:
    """The control: the check above can fail."""
    log = run_two(tmp_path, with_turns=False)
    assert overlaps(log) > 0, intervals(log)


def test_a_killed_holder_releases_the_turn(tmp_path: Path) -> None:
    holding, got_it = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=hold_forever, args=(str(tmp_path), holding))
    waiter = SPAWN.Process(target=wait_for_turn, args=(str(tmp_path), got_it))
    holder.start()
    try:
        assert holding.wait(timeout=60), "the holder never got the turn"
        waiter.start()
        assert not got_it.wait(timeout=2.0), "the waiter got the turn while the holder held it"
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        assert got_it.wait(timeout=30), "the turn stayed taken after its holder was killed"
        waiter.join(timeout=30)
        assert waiter.exitcode == 0
        holder.join(timeout=30)
        assert holder.exitcode == -signal.SIGKILL
    finally:
        for process in (holder, waiter):
            if process.is_alive():
                process.kill()
                process.join()


def try_lock(path: str) -> bool:
    """Whether an exclusive lock on ``path`` is free now (taken and dropped at once), from a file of our own."""
    with open(path, "a+") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


def test_the_turn_is_per_model_and_per_server(tmp_path: Path) -> None:
    turns = CpuTurns(MODEL, str(tmp_path))
    other_model = CpuTurns("tiny_cls_fused", str(tmp_path))
    try:
        # named after the parent: the stubs of one server share it, another server's stubs do not
        assert Path(turns.path) == tmp_path / f"tritonstack-turns-{os.geteuid()}" / f"{os.getppid()}-{MODEL}.lock"
        with turns:
            assert not try_lock(turns.path)
            assert try_lock(other_model.path)
        assert try_lock(turns.path)
    finally:
        turns.close()
        other_model.close()


def test_the_turn_files_of_servers_that_are_gone_are_removed(tmp_path: Path) -> None:
    import subprocess

    gone = subprocess.Popen(["true"])  # a pid that no longer exists once it is reaped
    gone.wait()
    private = tmp_path / f"tritonstack-turns-{os.geteuid()}"  # the turn files' folder, this user's alone
    private.mkdir(mode=0o700)
    stale = private / f"{gone.pid}-old.lock"
    live = private / f"{os.getpid()}-other.lock"  # this process: alive
    unrelated = private / "something-else.lock"
    for path in (stale, live, unrelated):
        path.touch()
    turns = CpuTurns("model", directory=str(tmp_path))
    try:
        assert not stale.exists() and live.exists() and unrelated.exists()
        assert Path(turns.path).exists()
    finally:
        turns.close()


def test_the_cpu_plan_shares_the_cores_and_takes_turns_only_where_instances_outnumber_them() -> None:
    from tritonstack.in_triton import contract
    from tritonstack.in_triton.models import encoder_runner

    def knobs(**params: str) -> contract.EncoderKnobs:  # as the config's parameters set them
        return contract.EncoderKnobs.from_parameters(params)

    cpus = len(os.sched_getaffinity(0))
    many = cpus + 1  # more CPU instances than this process has cores
    config = {"name": "plan", "instance_group": [{"kind": "KIND_CPU", "count": many}]}
    turns, threads = encoder_runner.cpu_plan(config, knobs(cpu_turns="1"), "CPU")
    assert isinstance(turns, CpuTurns) and threads == 1
    turns.close()
    turns, threads = encoder_runner.cpu_plan(config, knobs(cpu_turns="1", intra_op_thread_count="3"), "CPU")
    assert threads == 3  # the config's count wins
    turns.close()
    one = {"name": "plan", "instance_group": [{"kind": "KIND_CPU", "count": 1}]}
    turns, threads = encoder_runner.cpu_plan(one, knobs(cpu_turns="1"), "CPU")
    assert isinstance(turns, NoTurns) and threads == cpus  # one instance: every core, nobody to take turns with
    turns, threads = encoder_runner.cpu_plan(config, knobs(), "CPU")
    assert isinstance(turns, NoTurns)  # not asked for


def test_the_turn_files_are_private_to_this_user(tmp_path: Path) -> None:
    turns = CpuTurns(MODEL, str(tmp_path))
    try:
        assert stat.S_IMODE(os.stat(turns.directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(turns.path).st_mode) == 0o600
        assert os.stat(turns.directory).st_uid == os.geteuid()
    finally:
        turns.close()


@pytest.mark.parametrize("planted", ["symlink", "open to others", "another user's"])
def test_a_turn_folder_another_user_planted_is_refused_and_the_model_runs_without_turns(
    tmp_path: Path, planted: str
) -> None:
    from tritonstack.in_triton.models import encoder_runner

    private = tmp_path / f"tritonstack-turns-{os.geteuid()}"
    if planted == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        private.symlink_to(tmp_path / "elsewhere")
    elif planted == "open to others":
        private.mkdir()
        private.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a folder another user owns needs root")
        private.mkdir(mode=0o700)
        os.chown(private, 10001, 10001)
    with pytest.raises(PermissionError, match="not a private folder"):
        CpuTurns(MODEL, str(tmp_path))
    cpus = len(os.sched_getaffinity(0))
    many = {"name": MODEL, "instance_group": [{"kind": "KIND_CPU", "count": cpus + 1}]}
    with pytest.MonkeyPatch.context() as patch:  # the model loads, its instances merely share the CPUs
        patch.setattr(CpuTurns.__init__, "__defaults__", (str(tmp_path), encoder_runner.MAX_TURN_WAIT_S))
        turns = encoder_runner.turns_for(many, True, "CPU", cpus)
    assert isinstance(turns, NoTurns) and "not a private folder" in (turns.reason or "")


def test_a_planted_lock_file_symlink_is_not_followed(tmp_path: Path) -> None:
    private = tmp_path / f"tritonstack-turns-{os.geteuid()}"
    private.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_text("keep")
    (private / f"{os.getppid()}-{MODEL}.lock").symlink_to(target)
    with pytest.raises(OSError):  # ELOOP: O_NOFOLLOW
        CpuTurns(MODEL, str(tmp_path))
    assert target.read_text() == "keep"


def test_the_wait_for_a_turn_is_bounded(tmp_path: Path) -> None:
    holder = CpuTurns(MODEL, str(tmp_path))
    waiter = CpuTurns(MODEL, str(tmp_path), max_wait_s=0.2)  # another open file: contends like another process
    try:
        with holder:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="CPU turn"), waiter:
                pass
            assert 0.2 <= time.monotonic() - started < 2.0
            with pytest.raises(TimeoutError):
                waiter.hold(0.05)
        with waiter.hold(0.05):  # free again: at once
            assert not try_lock(waiter.path)
    finally:
        holder.close()
        waiter.close()


class _Request:
    def __init__(self, timeout_us: int) -> None:
        self._timeout_us = timeout_us

    def timeout(self) -> int:
        return self._timeout_us


def test_the_wait_follows_the_requests_timeouts_up_to_the_maximum() -> None:
    from tritonstack.in_triton.models.encoder_runner import MAX_TURN_WAIT_S, turn_wait_s

    assert turn_wait_s([_Request(300_000), _Request(1_000_000)]) == 1.0
    assert turn_wait_s([_Request(300_000), _Request(0)]) == MAX_TURN_WAIT_S  # one without a timeout
    assert turn_wait_s([_Request(60_000_000)]) == MAX_TURN_WAIT_S
    assert turn_wait_s([object()]) == MAX_TURN_WAIT_S  # a stub without timeout()
