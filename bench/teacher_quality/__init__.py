"""Teacher quality against student quality (the paper's Figure 4 at CPU scale): one student per GAN snapshot.

Usage: python -m bench.teacher_quality [--quick] [--teachers LIST] [--rows squeeze,sns] [--seeds N]
                                       [--budget-passes P] [--force] [--work DIR]   (= `sns bench teachers ...`)

Each teacher of the list (default: an untrained generator, 'random' = kimg 0, then the 20/40/60/80 kimg snapshots
of the committed Fashion-MNIST GAN run) distills one student per method row (default `squeeze`: syn_ratio 1,
no real image, so the student learns only what the teacher shows) with the Fashion-MNIST bench's run config
(`fashion-cpu` preset, lr 0.1) and a small budget of student image passes, evaluated like `sns bench fashion
--mode sitting` (kNN and linear probe on the full train/test sets). Each (teacher, row, seed) is one cached
resumable cell: bench/results/teacher_quality/runs/*.json, keyed by the teacher's G_ema checksum and the config
fingerprint. Writes bench/results/teacher_quality.{json,md} and bench/results/figures/teacher_quality.png
(accuracy against the teacher's FD-ref, log x axis). --quick: tiny budget, narrow student, evaluation subsets.

Modules: teachers (the snapshots and the untrained kimg-0 generator), cells (run configs, cached cells, the
table), render (Markdown and figure), cli (the command).
"""
