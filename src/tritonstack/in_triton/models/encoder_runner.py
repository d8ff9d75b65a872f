"""ONNX Runtime over a Triton batch of tokenized rows, shared by the ``onnxruntime`` backend and the text-in model.

Loaded by path beside the file that uses it (the stub runs without the
tritonstack package), so it imports only ``numpy`` and the standard library;
the parameters that set its knobs are read by the caller
(``contract.EncoderKnobs``).

* :func:`run_rows`: rows are padded to the longest text of their tokenizer
  batch. On a CPU the padding costs more than batching saves when lengths are
  mixed, so rows with an ``attention_mask`` are regrouped by their true length,
  the padding is trimmed, and each group of similar lengths runs as one ONNX
  Runtime call (``max_padding_waste`` bounds the padding a group may carry;
  outputs with a sequence axis are padded back). ``max_rows_per_call`` (0: no
  limit) caps the rows of one call: a small model may run fastest one row at a
  time on a CPU (see ``tritonstack tune``), and a dynamic-int8 graph needs
  exactly one, or a text's activation scale -- and so its output -- would
  depend on the texts it was batched with.
* :class:`CpuTurns`: where a model has more CPU instances than its process has
  CPUs (two on a server pinned to one core), the instances take turns on them
  (``cpu_turns``). Triton 2.51 forms the next batch of a model with a queue
  policy only while an instance waits for one (no prefetching), so one instance
  leaves the CPU idle between batches and a request can stall until the next
  arrival; a second instance keeps the next batch ready, and taking turns keeps
  the two from time-slicing one core (and its caches) between two computations.
  Where each instance has a core of its own they compute side by side. Measured
  in ``docs/export.md``.
"""

import contextlib
import fcntl
import os
import stat
import tempfile
import time

import numpy as np


def length_groups(lengths, max_padding_waste):
    """Row indices grouped by similar length: padding each group to its longest row adds at most
    ``max_padding_waste`` x the group's real tokens."""
    groups, current, used = [], [], 0
    for row in np.argsort(lengths, kind="stable"):
        length = int(lengths[row])
        if current and length * (len(current) + 1) > (1 + max_padding_waste) * (used + length):
            groups.append(current)
            current, used = [], 0
        current.append(int(row))
        used += length
    if current:
        groups.append(current)
    return groups


def default_threads(cpus, instances):
    """Intra-op threads of one instance when the config sets none: the CPUs this process may run on, shared
    among the ``instances`` that run on them (at least one each)."""
    return max(1, cpus // max(1, instances))


def instances_of_kind(config, kind):
    """Instances of ``kind`` ("KIND_CPU"/"CPU") that the config's groups start on this host. A GPU group's
    count is per GPU, and each GPU instance gets its own device, so only CPU instances share the CPUs."""
    kind = kind.upper().removeprefix("KIND_")
    if kind != "CPU":
        return 1
    groups = config.get("instance_group") or [{}]
    return sum(int(g.get("count", 1)) for g in groups if g.get("kind", "KIND_CPU").removeprefix("KIND_") == "CPU")


# How long an instance waits for its CPU turn at most; longer, the request is answered as overloaded. A turn
# lasts one batch's computation (milliseconds to a few hundred): a wait this long means a stuck holder, or a
# backlog the client's deadline has long given up on.
MAX_TURN_WAIT_S = 5.0
_FIRST_PAUSE_S = 0.0001  # polls for a busy turn start this short and double up to _LAST_PAUSE_S
_LAST_PAUSE_S = 0.002


class TurnTimeout(TimeoutError):
    """No CPU turn within the wait allowed: the caller answers its requests as overloaded."""


def private_dir(base, name):
    """``base/name``, a folder only this user can enter: made 0700 if absent, else checked to be a real folder
    (not a symlink) of this user that nobody else may open. ``PermissionError`` when it is not: another user
    made it first (``/dev/shm`` is shared by every local user) to read or hold the turn files."""
    path = os.path.join(base, name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{path} is not a private folder of this user (a symlink, another user's, or open to others): "
            "remove it, or set cpu_turns to 0"
        )
    return path


class CpuTurns:
    """A lock the CPU instances of one model in one server hold while they compute.

    An ``flock`` on a file named after the server process (the stub's parent) and the model, in a folder only
    this user can enter (:func:`private_dir`, under ``/dev/shm``): another local user can neither hold the turn
    (and freeze the model) nor plant a file or symlink in its place. The file is opened ``O_NOFOLLOW``, 0600.
    The kernel releases the lock when a holder dies, so a killed instance never blocks the others; the files of
    servers that are gone are removed when a new one is made. A wait for the turn is bounded (``max_wait_s``,
    or :meth:`hold`'s ``wait_s``): past it, :class:`TurnTimeout`.
    """

    PREFIX = "tritonstack-turns-"

    def __init__(self, model_name, directory=None, max_wait_s=MAX_TURN_WAIT_S):
        base = directory or ("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
        self.directory = private_dir(base, f"{self.PREFIX}{os.geteuid()}")
        _remove_stale(self.directory)
        self.model_name = model_name
        self.max_wait_s = max_wait_s
        self.path = os.path.join(self.directory, f"{os.getppid()}-{safe}.lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)  # held for the life of the instance
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(self._fd)
            raise PermissionError(f"{self.path} is not a file of this user")

    def hold(self, wait_s=None):
        """The turn, waiting at most ``wait_s`` (``None``: ``max_wait_s``) for it; use as ``with turns.hold(s):``."""
        self._acquire(self.max_wait_s if wait_s is None else wait_s)
        return self

    def _acquire(self, wait_s):
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        # A blocking flock cannot be given a deadline; polling with short pauses costs at most a pause of
        # latency when the turn frees up.
        deadline = time.monotonic() + wait_s
        pause = _FIRST_PAUSE_S
        while True:
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE_S)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TurnTimeout(
                        f"waited {wait_s:g} s for the CPU turn of {self.model_name!r} (cpu_turns)"
                    ) from None

    def __enter__(self):
        # after hold(): this file description holds the lock already, and flock grants it again at once
        self._acquire(self.max_wait_s)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        with contextlib.suppress(OSError):
            os.close(self._fd)


def turn_wait_s(requests, max_wait_s=MAX_TURN_WAIT_S):
    """How long a batch of ``requests`` may wait for its turn: the longest of their own timeouts (Triton's
    ``InferenceRequest.timeout()``, µs; the backend is not told when a request arrived, so its whole timeout
    stands for what remains of it), at most ``max_wait_s``; ``max_wait_s`` when one has none."""
    longest = 0.0
    for request in requests:
        try:
            timeout_us = int(request.timeout())
        except Exception:  # a stub without the method
            return max_wait_s
        if timeout_us <= 0:
            return max_wait_s
        longest = max(longest, timeout_us / 1e6)
    return min(max_wait_s, longest) if longest else max_wait_s


def _remove_stale(directory):
    """Remove the turn files in the private ``directory`` whose server process no longer exists."""
    for filename in os.listdir(directory):
        pid = filename.split("-", 1)[0]
        if not filename.endswith(".lock") or not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):  # another instance removed it first
            os.unlink(os.path.join(directory, filename))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class NoTurns:
    """The stand-in for :class:`CpuTurns` where instances do not take turns; ``reason`` says why, where turns
    were asked for and could not be had (for the model's log)."""

    def __init__(self, reason=None):
        self.reason = reason

    def hold(self, wait_s=None):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def close(self):
        return None


def turns_for(config, wanted, kind, cpus):
    """:class:`CpuTurns` when ``wanted`` (the config's ``cpu_turns``) and its CPU instances outnumber the ``cpus``
    this process may run on; else :class:`NoTurns`."""
    if wanted and instances_of_kind(config, kind) > cpus:
        try:
            return CpuTurns(config["name"])
        except OSError as error:  # instances then share the CPUs side by side: slower, never stuck
            return NoTurns(f"the instances do not take turns on the CPUs: {error}")
    return NoTurns()


def cpu_plan(config, knobs, kind):
    """``(turns, intra_op_threads)`` of one instance of ``config`` whose parameters say ``knobs``
    (``contract.EncoderKnobs``): whether it takes turns (:func:`turns_for`) and its thread count, the knobs'
    ``intra_op_threads`` or the CPUs this process may run on shared among the config's instances of ``kind``
    (:func:`default_threads`)."""
    cpus = len(os.sched_getaffinity(0))
    threads = knobs.intra_op_threads or default_threads(cpus, instances_of_kind(config, kind))
    return turns_for(config, knobs.cpu_turns, kind, cpus), threads


def run_rows(session, output_names, sequence_outputs, feeds, max_padding_waste, max_rows_per_call):
    """``session.run`` over ``feeds``: rows regrouped by true length, at most ``max_rows_per_call`` rows per
    call (see the module docstring). Returns one array per output name, rows in the order of ``feeds``."""
    mask = feeds.get("attention_mask")
    count = len(next(iter(feeds.values())))
    limit = max_rows_per_call or count
    trim = mask is not None and mask.ndim == 2 and not (count == 1 and mask.all())
    if not trim and count <= limit:
        return session.run(output_names, feeds)
    # without a mask to trim by, every row counts as full length: one group, in arrival order
    lengths = np.maximum(mask.sum(axis=1), 1) if trim else np.ones(count, dtype=np.int64)
    results = [None] * len(output_names)
    for group in length_groups(lengths, max_padding_waste):
        for start in range(0, len(group), limit):
            rows = group[start : start + limit]
            if trim:
                longest = int(lengths[rows].max())
                part = session.run(output_names, {n: a[rows, :longest] for n, a in feeds.items()})
            else:
                part = session.run(output_names, {n: a[rows] for n, a in feeds.items()})
            for k, (name, value) in enumerate(zip(output_names, part, strict=True)):
                if results[k] is None:
                    shape = list(value.shape)
                    shape[0] = count
                    if trim and name in sequence_outputs:
                        shape[1] = mask.shape[1]
                    results[k] = np.zeros(shape, dtype=value.dtype)
                if trim and name in sequence_outputs:
                    results[k][rows, :longest] = value
                else:
                    results[k][rows] = value
    return results
