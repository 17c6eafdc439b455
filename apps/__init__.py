"""Command-line apps of vqkeras (installed as `vqkeras.apps`; run `vqkeras --help`).

Thin layers over the public API: argument parsing, input loading and file
output live here, model logic never does.
"""
