"""``bench --profile``: the grouping of sampled stacks into serving stages, the flame graph, and the run itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonstack.bench import flamegraph, profile
from tritonstack.bench.profile import (
    CORE,
    DECODE,
    ENSEMBLE,
    GRPC,
    IDLE,
    ONNX,
    OTHER,
    RESPONSE,
    STUB_IPC,
    TOKENIZER,
    TURN,
)

# A fused stub's and tritonserver's stacks as py-spy --native (raw) and perf (collapsed here) write them.
FIXTURE = """\
TritonPythonModel.execute (model.py:435);_Step.execute (model.py:176);TextInStep.answer (model.py:325);\
_Encoder.run (model.py:400);run_rows (encoder_runner.py:252);Session.run (onnxruntime/capi/\
onnxruntime_inference_collection.py:406);0x7f9f9ac729d3 (onnxruntime/capi/onnxruntime_pybind11_state.so) 50
0x7f9fa9c4524a (libc.so.6);TritonPythonModel.execute (model.py:435);_Step.execute (model.py:176);\
TextInStep.answer (model.py:309);CpuTurns.hold (encoder_runner.py:130);CpuTurns._acquire (encoder_runner.py:145) 20
TritonPythonModel.execute (model.py:435);_Step.execute (model.py:176);TextInStep.answer (model.py:325);\
TextTokenizer.encode (tokenization.py:80);rayon_core::latch::LockLatch::wait_and_reset;\
std::sys::sync::condvar::futex::Condvar::wait;syscall 8
0x7f9fa9c4524a (libc.so.6);TritonPythonModel.execute (model.py:435);_Step.execute (model.py:160);\
_Step.read (model.py:130);_decode_rows (model.py:80);_decode_texts (model.py:60) 4
0x7f9fa9c4524a (libc.so.6);TritonPythonModel.execute (model.py:435);_Step.execute (model.py:176);\
TextInStep.answer (model.py:350);_respond (model.py:90);_respond.<locals>.<listcomp> (model.py:91) 3
0x7f9fa9c4524a (libc.so.6);TritonPythonModel.execute (model.py:435);_Step.execute (model.py:150);\
pthread_cond_wait (libc.so.6);0x7f9fa9ca3f16 (libc.so.6) 5
0x7f9fa9c4524a (libc.so.6);0x7f9fa9caeb8b (libc.so.6);0x7f9fa9ca3f16 (libc.so.6) 40
TritonPythonModel.execute (model.py:435);_Step.execute (model.py:140) 2
clone3 (libc.so.6);start_thread (libc.so.6);triton::server::grpc::InferHandler::Process (tritonserver);\
grpc_chttp2_perform_read (tritonserver);gpr_malloc (tritonserver);malloc (libc.so.6) 6
clone3 (libc.so.6);triton::server::grpc::InferHandler::Process (tritonserver);TRITONSERVER_ServerInferAsync \
(libtritonserver.so);triton::core::EnsembleScheduler::Enqueue (libtritonserver.so);memcpy (libc.so.6) 3
clone3 (libc.so.6);triton::core::DynamicBatchScheduler::BatcherThread (libtritonserver.so) 4
clone3 (libc.so.6);triton::backend::python::ModelInstanceState::ProcessRequests (libtriton_python.so) 7
"""


def test_each_stack_goes_to_the_stage_of_its_frame_nearest_the_leaf() -> None:
    stacks = profile.parse_collapsed(FIXTURE)
    assert sum(stacks.values()) == 152
    stages = [(profile.category(frames), count) for frames, count in stacks.items()]
    assert stages == [
        (ONNX, 50),
        (TURN, 20),
        (TOKENIZER, 8),  # the tokenizer's own thread-pool wait is the tokenizer's, not IPC
        (DECODE, 4),
        (RESPONSE, 3),
        (STUB_IPC, 5),  # a wait in the step's own frame (is_cancelled's answer from the server)
        (IDLE, 40),  # unresolved addresses only: the message loop blocked
        (OTHER, 2),
        (GRPC, 6),  # an allocation under the gRPC frontend is the frontend's
        (ENSEMBLE, 3),  # the scheduler below the gRPC handler wins
        (CORE, 4),
        (STUB_IPC, 7),  # the Python backend's side in tritonserver
    ]


def test_group_counts_every_sample_and_shares_leave_idle_out() -> None:
    groups = profile.group(profile.parse_collapsed(FIXTURE))
    assert groups == {
        GRPC: 6, ENSEMBLE: 3, CORE: 4, STUB_IPC: 12, DECODE: 4, TOKENIZER: 8, ONNX: 50, RESPONSE: 3, TURN: 20,
        OTHER: 2, IDLE: 40,
    }  # fmt: skip
    shares = profile.shares(groups)
    assert IDLE not in shares
    assert shares[ONNX] == pytest.approx(50 / 112)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert profile.shares(dict.fromkeys(profile.CATEGORIES, 0))[ONNX] == 0.0


def test_unresolved_frames_are_named_by_their_library() -> None:
    assert profile.tidy("0x7f9f9ac729d3 (onnxruntime/capi/x.so)") == "[x.so]"
    assert profile.tidy("Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406)") == (
        "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406)"
    )
    assert profile.category(("[libc.so.6]", "[libc.so.6]")) == IDLE


def test_perf_script_output_is_collapsed_root_first() -> None:
    script = """\
tritonserver 22386 10741.558034:    2004008 cpu-clock:ppp:
\tffffffff8162cacd vma_complete+0xcd ([kernel.kallsyms])
\t          7ddc11 gpr_malloc+0x11 (/venv/pytriton/tritonserver/bin/tritonserver)
\t           d44a2 [unknown] (/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30)
\t           891f4 start_thread+0x304 (/usr/lib/x86_64-linux-gnu/libc.so.6)

tritonserver 22388 10741.565588:    2004008 cpu-clock:ppp:
\t           891f4 start_thread+0x304 (/usr/lib/x86_64-linux-gnu/libc.so.6)

tritonserver 22388 10741.565589:    2004008 cpu-clock:ppp:
\t           891f4 start_thread+0x304 (/usr/lib/x86_64-linux-gnu/libc.so.6)
"""
    stacks = profile.collapse_perf_script(script)
    assert stacks == {
        (
            "start_thread (libc.so.6)",
            "[libstdc++.so.6.0.30]",
            "gpr_malloc (tritonserver)",
            "vma_complete ([kernel.kallsyms])",
        ): 1,
        ("start_thread (libc.so.6)",): 2,
    }
    assert profile.parse_collapsed(profile.collapsed_text(stacks)) == stacks


def test_flame_graph_is_an_svg_with_a_box_per_frame() -> None:
    stacks = {tuple(profile.tidy(f) for f in frames): n for frames, n in profile.parse_collapsed(FIXTURE).items()}
    svg = flamegraph.render(stacks, "minilm_fused_0_0 at c16 <py-spy>")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "&lt;py-spy&gt;" in svg  # titles escaped
    assert "Session.run" in svg and "(152 samples, 100.00%)" in svg  # the root spans every sample
    assert "run_rows (encoder_runner.py:252) (50 samples, 32.89%)" in svg


def test_a_missing_py_spy_is_an_error_with_the_pip_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tritonstack.bench.errors import BenchError

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BenchError) as caught:
        profile.Profiler(tmp_path)
    assert "py-spy" in caught.value.message and "pip install 'tritonstack[bench]'" in (caught.value.hint or "")


def _ptrace_refused() -> str | None:
    """Why py-spy cannot attach here (no py-spy, or ptrace not permitted), else None."""
    try:
        spy = profile.py_spy()
    except Exception as error:
        return str(error)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        done = subprocess.run([spy, "dump", "--pid", str(child.pid)], capture_output=True, timeout=60)
    finally:
        child.kill()
        child.wait()
    if done.returncode != 0:
        return f"py-spy cannot attach here (ptrace not permitted? needs root or CAP_SYS_PTRACE): {done.stderr[-200:]!r}"
    return None


@pytest.mark.integration
def test_bench_profile_writes_flame_graphs_of_the_stubs(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.cli import main

    refused = _ptrace_refused()
    if refused:
        pytest.skip(refused)
    report = tmp_path / "report"
    argv = ["bench", "--model-dir", str(tiny_model_dirs["tiny"]), "--repository", str(tiny_repository),
            "--name", "tiny", "--report-dir", str(report), "--texts", "32", "--batch-sizes", "1",
            "--concurrency", "1,4", "--rounds", "1", "--warmup-s", "0.1", "--duration-s", "0.4", "--no-baseline",
            "--no-half-load", "--profile"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "where the server's samples went" in printed and ONNX in printed
    summary = json.loads((report / "profile.json").read_text())
    assert [p["label"] for p in summary["points"]] == ["c1"]  # of c=1 and c=16, the one this sweep has
    for point in summary["points"]:
        stubs = [p for p in point["processes"] if p["sampler"] == profile.PY_SPY]
        assert stubs and all(p["error"] is None for p in stubs)
        for process in stubs:
            for name in process["files"]:
                assert (report / name).is_file()
        assert any(name.endswith(".svg") for p in stubs for name in p["files"])
        busy = [p for p in stubs if sum(n for k, n in p["samples"].items() if k != IDLE)]
        assert busy, "no stub was seen at work"
