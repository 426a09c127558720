"""Fashion-MNIST benchmark: every method, same student and budget, one cached resumable run per table cell.

Usage: python -m bench.fashion [--quick | --mode quick|sitting|long|full] [--precision bf16|fp32|auto]
                               [--rows PATTERNS] [--tracks full,scarce] [--force] [--work DIR]
                               [--teacher TRACK=SPEC] [--budget-minutes M] [--list]   (= `sns bench fashion ...`)

A row is a set of config overrides of the `fashion-cpu` preset. Each (track, row, lr, seed) is one run in
<work>/<track>/<row>/lr<lr>-s<seed> (resumable) whose result is cached as a JSON file in
bench/results/fashion[-quick|-sitting|-long][-fp32]/runs/; a cached result is reused unless --force or its config
changed. --precision fp32 (or auto on a CPU without bf16 hardware) keeps fp32 cells apart in the -fp32 folders.
Learning rate: seed 0 at every lr of the sweep, the best by kNN on a held-out part of the train set
(never the test set), then the remaining seeds at that lr. Tables:
bench/results/fashion[-quick|-sitting|-long][-fp32].{json,md}.

Modules: plan (modes, rows, run configs, sweeps), cells (fingerprints, cached results, the collected table),
train (teachers, evaluation, one cell), render (Markdown), cli (the command and its loop over cells).
"""
