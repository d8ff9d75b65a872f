"""One module per CLI command (``tritonstack NAME`` runs ``tritonstack.commands.NAME``).

Each exposes ``add_arguments(parser)`` and ``run(args) -> int``; ``cli.py`` imports only the one it runs.
"""
