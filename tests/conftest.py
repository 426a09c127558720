"""Shared test fixtures: tiny configs that train in seconds on a CPU."""

import os

# Test tensors are tiny: one thread is as fast, and it cannot thrash when the machine is busy
# (2 spinning OpenMP threads per process on a loaded 2-core box made steps ~50x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocess tests (torchrun, python -m)

import pytest  # noqa: E402
import tiny  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_pretrain_cfg():
    """A pretraining config small enough for a few CPU steps per second (digits at 16 px, 1/8-width ResNet-18)."""
    from squeezespan.config import resolve_config
    from squeezespan.pretraining import PRETRAIN_DEFAULTS

    def make(**over):
        base = dict(tiny.PRETRAIN, data="digits", steps=4, knn_every=0, log_every=1, device="cpu")
        base.update(over)
        return resolve_config(PRETRAIN_DEFAULTS, "pretrain", extra=base)

    return make
