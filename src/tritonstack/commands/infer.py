"""Send texts to a served model and print its embeddings, labels or ranking.

    tritonstack infer --url 127.0.0.1:8001 --model minilm --text "hello" --text "world"
    tritonstack infer --model minilm_cls --file reviews.txt --json
    tritonstack infer --model reranker --query "reset password" --text "To reset it ..." --text "Our prices ..."

The task comes from the model's outputs: feature-extraction prints one
embedding per text, text-classification a label and score per text,
text-ranking (``--query``; the texts are its documents) the documents best
first with their scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tritonstack import _ports, _texts
from tritonstack.commands._args import add_tls, tls_config
from tritonstack.in_triton import contract

PREVIEW_VALUES = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        help=f"Triton's gRPC address host:port; repeat for failover (default {_ports.LOCAL_GRPC_URL})",
    )
    parser.add_argument("--model", required=True, help="the served text-in model's name")
    parser.add_argument("--version", default=None, help="model version (default: the server's choice)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to send; repeat for several")
    source.add_argument("--file", type=Path, help=f"a file of texts, {_texts.RULE} ('-': standard input)")
    parser.add_argument("--query", help="text-ranking models: the query the texts (its documents) are ranked against")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # A timeout left out is the SDK's "not passed" (UNSET), so Timeouts() applies its own default.
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=argparse.SUPPRESS,
        help="deadline of the whole call, in seconds (default: the SDK's Timeouts().call_s)",
    )
    parser.add_argument(
        "--connect-timeout-s",
        type=float,
        default=argparse.SUPPRESS,
        help="connect timeout, in seconds (default: the SDK's Timeouts().connect_s)",
    )
    add_tls(parser)
    parser.add_argument(
        "--header", action="append", default=[], metavar="KEY=VALUE", help="gRPC metadata sent with each call"
    )


def read_texts(args: argparse.Namespace) -> list[str]:
    from tritonstack.client import ClientError

    if args.text is not None:
        return list(args.text)
    if str(args.file) == "-":
        return _texts.parse_texts(sys.stdin.read())
    return _texts.read_texts(args.file, what="texts file", error=ClientError)


def parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    from tritonstack.client import ClientError

    headers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--header {pair!r} is not KEY=VALUE")
        headers[key.strip()] = value
    return headers


def run(args: argparse.Namespace) -> int:
    from tritonstack.client import UNSET, Client, InvalidInputError, Timeouts

    texts = read_texts(args)
    tls = tls_config(args)
    urls = args.url or [_ports.LOCAL_GRPC_URL]
    timeouts = Timeouts(call_s=getattr(args, "timeout_s", UNSET), connect_s=getattr(args, "connect_timeout_s", UNSET))
    with Client(
        urls,
        args.model,
        version=args.version,
        timeouts=timeouts,
        tls=tls,
        headers=parse_headers(args.header),
    ) as client:
        task = client.model_info().task
        served = contract.TASKS_BY_NAME.get(task or "")
        if served is None or served.sdk_method is None:
            raise InvalidInputError(
                f"model {args.model!r} is {task or 'not a tritonstack text model'}; `tritonstack infer` handles "
                f"{', '.join(contract.SDK_TASKS)} models",
                hint="call other models with tritonstack.Client(...).infer({name: array})",
                model=args.model,
            )
        if served.pair != (args.query is not None):
            raise InvalidInputError(
                f"model {args.model!r} is {served.name}: "
                + ("pass --query, the texts are its documents" if served.pair else "--query is for text-ranking"),
                model=args.model,
            )
        call = getattr(client, served.sdk_method)
        answer = call(args.query, texts) if served.pair else call(texts)
        _PRINTS[served.sdk_method](args, served.name, texts, answer)
    return 0


def _print_embeddings(args: argparse.Namespace, task: str, texts: list[str], embeddings: Any) -> None:
    if args.json:
        _print_json({"model": args.model, "task": task, "embeddings": embeddings.tolist()})
        return
    for text, row in zip(texts, embeddings, strict=True):
        preview = " ".join(f"{value:+.4f}" for value in row[:PREVIEW_VALUES])
        print(f"[{len(row)}] {preview} ... |{float((row**2).sum() ** 0.5):.3f}|\t{_clip(text)}")


def _print_classifications(args: argparse.Namespace, task: str, texts: list[str], results: Any) -> None:
    if args.json:
        rows = [{"text": t, "label": r.label, "score": r.score} for t, r in zip(texts, results, strict=True)]
        _print_json({"model": args.model, "task": task, "results": rows})
        return
    for text, result in zip(texts, results, strict=True):
        print(f"{result.label}\t{result.score:.4f}\t{_clip(text)}")


def _print_ranking(args: argparse.Namespace, task: str, texts: list[str], results: Any) -> None:
    if args.json:
        rows = [{"index": r.index, "score": r.score, "text": texts[r.index]} for r in results]
        _print_json({"model": args.model, "task": task, "query": args.query, "results": rows})
        return
    for rank, result in enumerate(results, 1):
        print(f"{rank}\t{result.score:+.4f}\t[{result.index}] {_clip(texts[result.index])}")


# How the answer of each SDK call (contract.Task.sdk_method) is printed.
_PRINTS = {"embed": _print_embeddings, "classify": _print_classifications, "rerank": _print_ranking}


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
