"""Training-step throughput of every method on the fashion-cpu student.

Modules: steps (one timed case: a method x variant stepped like the engine), bank (live teacher vs feature
bank), cli (the command, the Markdown table).

The command and its usage: throughput.cli (`sns bench throughput`, `python -m bench.throughput`).
"""
