"""One module per CLI command (``tritonstack NAME`` runs ``tritonstack.commands.NAME``, ``-`` as ``_``).

Each exposes ``add_arguments(parser)`` and ``run(args) -> int``; ``cli.py`` imports only the one it runs.
What a module imports at its top is what ``tritonstack NAME --help`` costs: torch, ONNX Runtime, Locust,
gRPC and tritonclient come in ``run`` (``tests/cli/test_cli.py`` checks each command). ``_args`` holds the
argument types and options several commands declare.
"""
