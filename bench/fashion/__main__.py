"""`python -m bench.fashion ...` from the repository root (= `sns bench fashion ...`)."""

from bench.common import run_main
from bench.fashion.cli import main

run_main(main)
