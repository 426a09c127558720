"""`python -m bench.throughput ...` from the repository root (= `sns bench throughput ...`)."""

from bench.common import run_main
from bench.throughput.cli import main

run_main(main)
