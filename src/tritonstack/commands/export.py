"""Export a Hugging Face model to a quantized, parity-gated ONNX model in a Triton model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tritonstack.commands._args import gpu_ids, non_negative_int, positive_int
from tritonstack.export.errors import AccuracyGateError, ExportError
from tritonstack.export.gates import Gate, GateMetric
from tritonstack.export.options import (
    DEFAULT_GATE,
    DEFAULT_LAYOUT,
    DEFAULT_PRECISION,
    TARGETS,
    ExportOptions,
    Precision,
)
from tritonstack.in_triton.contract import LAYOUTS, TASKS
from tritonstack.repository.paths import DEFAULT_REPOSITORY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="local Hugging Face model directory or hub id")
    parser.add_argument(
        "--revision",
        default=None,
        help="of a hub id: the branch, tag or commit to export (default: the default branch); only the files "
        "the export reads are downloaded, and the report records the commit",
    )
    parser.add_argument(
        "--task", choices=TASKS, default=None, help="task; inferred from the model's config when omitted"
    )
    parser.add_argument(
        "--name", default=None, help="model name in the repository; derived from the model's name when omitted"
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="Triton model repository")
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="where the model will be served")
    parser.add_argument(
        "--gpus",
        type=gpu_ids,
        default=None,
        metavar="IDS|all",
        help="--target gpu: CUDA device ids that each get an encoder instance, e.g. 0,1; 'all': list none, so "
        "Triton uses every GPU of the host that serves it. Default: every GPU visible now (none visible: as 'all')",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="how the text-in model runs a text: fused (one Python model tokenizes, runs ONNX Runtime in its own "
        "process and post-processes; CPU only, one hop and one copy fewer per request) or ensemble (tokenizer -> "
        "encoder [-> postprocess] models). Default: the layout the name's releases run; for a new name "
        f"{DEFAULT_LAYOUT['cpu']} on cpu, {DEFAULT_LAYOUT['gpu']} on gpu (docs/export.md); `tritonstack tune` "
        "measures both",
    )
    parser.add_argument(
        "--cpu-instances",
        type=positive_int,
        default=None,
        metavar="N",
        help="--target cpu: instances of the encoder (the fused step), each with its share of the server's cores. "
        "Default: one per core of this machine, at most 8 (each holds a copy of the weights); set the serving "
        "machine's cores when it differs. More instances than cores take turns; `tritonstack tune` searches it",
    )
    parser.add_argument(
        "--precision",
        choices=[p.value for p in Precision],
        default=None,
        help=f"weights/compute precision: {DEFAULT_PRECISION['cpu']} on cpu, {DEFAULT_PRECISION['gpu']} on gpu "
        "when omitted. auto: the fastest of fp32 and the int8 recipes that passes the gate -- int8 wins on CPUs "
        "with VNNI/AMX",
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="Triton max_batch_size")
    parser.add_argument(
        "--max-sequence-length", type=int, default=None, help="max tokens per text; the model's own limit when omitted"
    )
    parser.add_argument(
        "--max-queue-size",
        type=non_negative_int,
        default=None,
        metavar="REQUESTS",
        help="Triton's bound of each step's queue: a request beyond it is refused at once (UNAVAILABLE); none "
        "when omitted or 0. Any Triton queue policy stalls Triton 2.51's batcher up to 500 ms (docs/export.md): "
        "the steps shed by --queue-timeout-ms instead",
    )
    parser.add_argument(
        "--queue-timeout-ms",
        type=non_negative_int,
        default=None,
        metavar="MS",
        help="queueing budget of a request: a Python step answers a request that the SDK sent longer ago "
        "UNAVAILABLE at once, uncomputed; 500 when omitted, 0: none",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="answer repeated texts from Triton's response cache (the text-in model's outputs must be "
        "deterministic: docs/cache.md); `tritonstack serve` then starts a local cache",
    )
    parser.add_argument(
        "--gate",
        type=_gate,
        default=Gate(DEFAULT_GATE),
        metavar="[METRIC=]THRESHOLD",
        help=f"accuracy gate on the gate split: a threshold of min_cosine (feature-extraction) or label_agreement "
        f"(classification), or METRIC=THRESHOLD with METRIC one of {', '.join(m.value for m in GateMetric)} "
        "(max_abs_prob_diff: at most)",
    )
    parser.add_argument(
        "--parity-texts",
        type=Path,
        default=None,
        metavar="FILE",
        help="more gate texts, one per line, added to the built-in gate split (never used to guide the search)",
    )
    parser.add_argument("--json", action="store_true", help="print the export report as JSON on stdout")


def _gate(text: str) -> Gate:
    try:
        return Gate.parse(text)
    except ExportError as error:
        raise argparse.ArgumentTypeError(f"{error.message} ({error.hint})") from None


def run(args: argparse.Namespace) -> int:
    # torch, optimum, onnx, onnxruntime: what a run imports, not `export --help`
    from tritonstack.export.pipeline import export_model
    from tritonstack.export.report import candidates_table, sensitivity_table, summarize

    options = ExportOptions(
        model=args.model,
        revision=args.revision,
        task=args.task,
        name=args.name,
        repository=args.repository,
        target=args.target,
        gpus=args.gpus,
        precision=Precision(args.precision) if args.precision else None,
        max_batch_size=args.max_batch_size,
        max_sequence_length=args.max_sequence_length,
        max_queue_size=args.max_queue_size,
        queue_timeout_ms=args.queue_timeout_ms,
        gate=args.gate,
        parity_texts=args.parity_texts,
        response_cache=args.cache,
        layout=args.layout,
        cpu_instances=args.cpu_instances,
    )
    try:
        result = export_model(options)
    except AccuracyGateError as error:
        # The table is the evidence for the refusal: show it, then let the CLI print error + hint.
        if error.report is not None:
            if args.json:
                print(error.report.to_json())
            else:
                print(candidates_table(error.report), file=sys.stderr)
                if error.report.sensitivity:
                    print(sensitivity_table(error.report), file=sys.stderr)
        raise
    if args.json:
        print(result.report.to_json())
    else:
        print(candidates_table(result.report))
        print()
        if result.report.sensitivity:
            print(sensitivity_table(result.report))
            print()
        print(summarize(result.report))
    return 0
