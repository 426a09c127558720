"""The experiments of squeezespan: benchmark packages that use only the library's public API.

Each bench is a module (or package) with a ``main(argv, prog)``; run it as ``sns bench NAME ...`` or, from the
repository root, ``python -m bench.NAME ...``:

- ``bench.fashion``: the Fashion-MNIST table, every method at one budget (``sns bench fashion``)
- ``bench.figures``: its figures: kNN curves, UMAP, the rho sweep (``sns bench figures``)
- ``bench.teacher_quality``: student accuracy against teacher FD-ref (``sns bench teachers``)
- ``bench.throughput``: training-step throughput of every method (``sns bench throughput``)
- scripts run by path (``python bench/NAME.py``), importing only the library: ``augment_speed.py``,
  ``bank_accuracy.py``, ``fault_injection.py``, ``official_parity.py``

Recorded results (JSON, the Markdown tables rendered from them, figures) live in ``bench/results``.
"""
