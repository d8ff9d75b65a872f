"""Tiny random Hugging Face models built locally from a transformers config: no downloads.

Each builder saves a model and its fast tokenizer into a folder that looks like
a hub checkout, so the export pipeline treats it like any other model.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "the a an of to and in is it that for on with as was by be this are from at or have not but "
    "model triton server text embedding batch latency token queue compute fast slow good bad "
    "hello world quick brown fox jumps over lazy dog cat sat mat rain sun cloud river mountain "
    "data test export serve client load metric time request response error value number word"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = ("NEGATIVE", "POSITIVE")


def _write_vocab(directory: Path) -> Path:
    chars = sorted({c for w in WORDS for c in w}) + list("0123456789.,!?'-")
    pieces = [f"##{c}" for c in chars]
    vocab = SPECIAL + WORDS + chars + pieces
    path = directory / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def _bert_tokenizer(directory: Path, max_length: int) -> None:
    from transformers import BertTokenizerFast

    vocab = _write_vocab(directory)
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=max_length)
    tokenizer.save_pretrained(directory)


def _roberta_tokenizer(directory: Path, max_length: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
    )
    tokenizer.train_from_iterator([" ".join(WORDS)] * 4, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length)
    fast.save_pretrained(directory)


def build(
    directory: Path,
    architecture: str = "bert",
    task: str = "feature-extraction",
    *,
    hidden_size: int = 32,
    layers: int = 2,
    max_length: int = 64,
    seed: int = 0,
) -> Path:
    """Build a tiny ``architecture`` model for ``task`` in ``directory``; return it."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    common = {"vocab_size": 512, "max_position_embeddings": max_length + 4}
    if architecture == "bert":
        config = transformers.BertConfig(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=hidden_size * 2,
            **common,
        )
        _bert_tokenizer(directory, max_length)
    elif architecture == "distilbert":
        config = transformers.DistilBertConfig(
            dim=hidden_size, n_layers=layers, n_heads=2, hidden_dim=hidden_size * 2, **common
        )
        _bert_tokenizer(directory, max_length)
    elif architecture == "roberta":
        config = transformers.RobertaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=hidden_size * 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            vocab_size=512,
            max_position_embeddings=max_length + 4,
        )
        _roberta_tokenizer(directory, max_length)
    else:
        raise ValueError(f"no tiny builder for {architecture!r}")
    if task == "feature-extraction":
        model = transformers.AutoModel.from_config(config)
    elif task == "text-ranking":
        model = _cross_encoder(config)
    else:
        config.id2label = dict(enumerate(LABELS))
        config.label2id = {label: i for i, label in enumerate(LABELS)}
        auto = {
            "text-classification": transformers.AutoModelForSequenceClassification,
            "token-classification": transformers.AutoModelForTokenClassification,
        }[task]
        model = auto.from_config(config)
    model.eval()
    model.save_pretrained(directory)
    (directory / "tiny.json").write_text(json.dumps({"architecture": architecture, "task": task}))
    return directory


# A random cross-encoder at transformers' initialisation (std 0.02) scores every pair of a query within ~1e-5 of
# the others (measured on the gate split's pairs: within-query std 2.3e-5, adjacent gaps down to 4e-8), an order
# that float noise decides. Initialised ten times wider, with its classifier ten times larger still, a query's
# scores spread by ~19 units and adjacent documents differ by 0.14 at least: an order worth checking.
CROSS_ENCODER_INIT_STD = 0.2
CROSS_ENCODER_HEAD_SCALE = 10.0


def _cross_encoder(config: object) -> object:
    """A one-logit sequence-classification model (a reranker's shape) whose scores spread."""
    import torch
    import transformers

    config.num_labels = 1  # type: ignore[attr-defined]
    # what sentence-transformers (v4+) writes into a CrossEncoder's config.json; Identity, as the ms-marco
    # cross-encoders name it: CrossEncoder.predict returns the raw logit, and export infers text-ranking
    config.sentence_transformers = {"activation_fn": "torch.nn.modules.linear.Identity"}  # type: ignore[attr-defined]
    config.initializer_range = CROSS_ENCODER_INIT_STD  # type: ignore[attr-defined]
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        model.classifier.weight.mul_(CROSS_ENCODER_HEAD_SCALE)
    return model


# The tests share a busy machine, where a request can wait longer than export's default queue budget
# (500 ms) without anything being wrong with the server: the tiny models get a generous one, so that a
# functional test is not shed. The tests of shedding serve their own models (test_server_overload.py).
QUEUE_TIMEOUT_MS = 30_000


def export_fp32(
    model_dir: Path,
    repository: Path,
    name: str,
    *,
    max_batch_size: int = 64,
    queue_timeout_ms: int = QUEUE_TIMEOUT_MS,
    target: str = "cpu",
    gpus: tuple[int, ...] = (),
    layout: str = "ensemble",
    cpu_instances: int = 1,
) -> Path:
    """Export ``model_dir`` (fp32, no quantization search: fast) into ``repository`` as ``name``; a gpu
    ``target`` writes what ``export --target gpu`` does around the model (KIND_GPU on ``gpus``, TensorRT);
    ``layout`` is ``export --layout`` (repository/layouts.py), ``cpu_instances`` ``--cpu-instances``."""
    from tritonstack.export.onnx_export import export_onnx
    from tritonstack.repository.writer import ExportedModel, write_text_model

    onnx = export_onnx(model_dir, None, repository.parent / f".onnx-{name}")
    model = ExportedModel(
        **onnx.spec(),
        name=name,
        precision="fp32",
        max_batch_size=max_batch_size,
        queue_timeout_ms=queue_timeout_ms,
        target=target,
        gpus=gpus,
        layout=layout,
        cpu_instances=cpu_instances,
    )
    return write_text_model(repository, model)


def export_fp32_served_twice(model_dir: Path, repository: Path, *, cached: str, uncached: str) -> None:
    """One fp32 ONNX export of ``model_dir`` written as two text-in models: ``cached`` with Triton's response
    cache enabled, ``uncached`` without; the same weights, so their outputs can be compared bit for bit."""
    from tritonstack.export.onnx_export import export_onnx
    from tritonstack.repository.writer import ExportedModel, write_text_model

    onnx = export_onnx(model_dir, None, repository.parent / ".onnx-served-twice")
    for name, response_cache in ((cached, True), (uncached, False)):
        model = ExportedModel(
            **onnx.spec(), name=name, precision="fp32", max_batch_size=64, queue_timeout_ms=QUEUE_TIMEOUT_MS,
            response_cache=response_cache,
        )  # fmt: skip
        write_text_model(repository, model)


def build_slow_onnx(path: Path, squarings: int = 4) -> Path:
    """An ONNX model whose execution takes as long as a test needs, for overload and cancellation tests.

    Input ``x`` FP32 ``[batch_size, width]``, output ``y`` FP32 ``[batch_size, 1]``. It squares the
    ``width`` x ``width`` Gram matrix of ``x`` ``squarings`` times, so its time grows with ``width``
    cubed and hardly with the batch: the caller picks the width that makes one execution last long
    enough. Zeros in, zeros out.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["x"], ["x_t"]), helper.make_node("MatMul", ["x_t", "x"], ["gram_0"])]
    for step in range(squarings):
        nodes.append(helper.make_node("MatMul", [f"gram_{step}", f"gram_{step}"], [f"gram_{step + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"gram_{squarings}", "axis_1"], ["row_sums"], keepdims=1),
        helper.make_node("MatMul", ["x", "row_sums"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 1])],
        [helper.make_tensor("axis_1", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
