"""The tiny pretraining settings end-to-end tests start from: digits at 16 px, a 1/8-width ResNet-18 and small
heads, so that a run takes seconds on a CPU. One place to change them for every test."""

PRETRAIN = dict(
    resolution=16,
    width=0.125,
    batch_size=16,
    steps=2,
    proj_hidden=32,
    proj_dim=32,
    squeeze_hidden=32,
    final_eval=False,
    ckpt_every=0,
)


def _yaml(v) -> str:
    """A value as YAML spells it on the command line (false, not False; null, not None)."""
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


def overrides(drop: tuple[str, ...] = (), **changes) -> list[str]:
    """PRETRAIN updated with ``changes``, without the keys in ``drop``, as ``key=value`` command-line overrides."""
    cfg = {k: v for k, v in {**PRETRAIN, **changes}.items() if k not in drop}
    return [f"{k}={_yaml(v)}" for k, v in cfg.items()]
