"""Fashion-MNIST benchmark: every method, same student and budget, one cached resumable run per table cell.

Modules: plan (modes, rows, run configs, sweeps), cells (fingerprints, cached results, the collected table),
train (teachers, evaluation, one cell), render (Markdown), cli (the command and its loop over cells).

The command and its usage: fashion.cli (`sns bench fashion`, `python -m bench.fashion`).
"""
