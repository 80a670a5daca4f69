"""Command-line tools that work on configs: `python -m vidtx.tools.complexity --config=...`."""
