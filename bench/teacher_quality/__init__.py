"""Teacher quality against student quality (the paper's Figure 4 at CPU scale): one student per GAN snapshot.

Modules: teachers (the snapshots and the untrained kimg-0 generator), cells (run configs, cached cells, the
table), render (Markdown and figure), cli (the command).

The command and its usage: teacher_quality.cli (`sns bench teachers`, `python -m bench.teacher_quality`).
"""
