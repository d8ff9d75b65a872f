"""Export a Hugging Face model to a quantized, parity-gated ONNX model in a Triton model repository.

Heavy imports (torch, transformers, optimum, onnxruntime) happen inside ``run``
so that ``tritonstack --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tritonstack.repository.contract import TASKS
from tritonstack.repository.layout import DEFAULT_REPOSITORY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="local Hugging Face model directory or hub id")
    parser.add_argument(
        "--task", choices=TASKS, default=None, help="task; inferred from the model's config when omitted"
    )
    parser.add_argument(
        "--name", default=None, help="model name in the repository; derived from the model's name when omitted"
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="Triton model repository")
    parser.add_argument("--target", choices=("cpu", "gpu"), default="cpu", help="where the model will be served")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "int8"),
        default=None,
        help="weights/compute precision. auto (the cpu default): the fastest of fp32 and the int8 recipes that "
        "passes the gate -- int8 wins on CPUs with VNNI/AMX; fp16 is the gpu default",
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="Triton max_batch_size")
    parser.add_argument(
        "--max-sequence-length", type=int, default=None, help="max tokens per text; the model's own limit when omitted"
    )
    parser.add_argument(
        "--gate",
        type=float,
        default=None,
        help="accuracy gate: min cosine (feature-extraction) or label agreement (classification); 0.99 when omitted",
    )
    parser.add_argument(
        "--parity-texts", type=Path, default=None, metavar="FILE", help="extra parity texts, one per line"
    )
    parser.add_argument("--json", action="store_true", help="print the export report as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from tritonstack.export.errors import AccuracyGateError
    from tritonstack.export.parity import DEFAULT_GATE
    from tritonstack.export.pipeline import ExportOptions, candidates_table, export_model, summarize

    options = ExportOptions(
        model=args.model,
        task=args.task,
        name=args.name,
        repository=args.repository,
        target=args.target,
        precision=args.precision,
        max_batch_size=args.max_batch_size,
        max_sequence_length=args.max_sequence_length,
        gate=DEFAULT_GATE if args.gate is None else args.gate,
        parity_texts=args.parity_texts,
    )
    try:
        result = export_model(options)
    except AccuracyGateError as error:
        # The table is the evidence for the refusal: show it, then let the CLI print error + hint.
        if error.report is not None:
            if args.json:
                print(json.dumps(error.report, indent=2))
            else:
                print(candidates_table(error.report), file=sys.stderr)
        raise
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print(candidates_table(result.report))
        print()
        print(summarize(result.report))
    return 0
