"""`python -m bench.teacher_quality ...` from the repository root (= `sns bench teachers ...`)."""

from bench.common import run_main
from bench.teacher_quality.cli import main

run_main(main)
