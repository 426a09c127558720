"""Property-based fuzz of the config and CLI layer (Hypothesis): whatever `key=value` overrides, config files and
flags a user types, `sns` either accepts them or refuses them with one `error:` line and exit status 2 — never a
traceback, never a second line. `sns config show` resolves and checks a config exactly as the run commands do,
without training, so it stands in for them here; `bench/fuzz.py` runs a longer fuzz against the real commands.
"""

from __future__ import annotations

import math

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from squeezespan.cli import CONFIG_KINDS, main  # noqa: E402

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Values as a user types them after `key=` (parsed as YAML): numbers at and beyond every limit, non-finite and
# huge numbers, wrong types, broken YAML, nesting, empty.
SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", ".nan", "inf", "-.inf", "1e309", "-0", "0", "1", "-1", "0.5", "1e-320", "2**40"]),
    st.sampled_from(["true", "false", "null", "~", "yes", "", "''", "[]", "{}", "[1, 2, 3]", "{a: 1}", "[", "{", "]"]),
    st.sampled_from(["auto", "cpu", "cuda:7", "fp16", "bf16", "resnet18", "timm:", "x:y", "../../etc", "a" * 300]),
    st.text(max_size=20),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"))


def overrides(kind: str):
    keys = st.one_of(
        st.sampled_from(sorted(CONFIG_KINDS[kind])),
        st.sampled_from(["augment.crop_scale", "augment.blur_p", "augment.nope", "batch", "snapshot_kimg"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12),
    )
    return st.lists(st.tuples(keys, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=4)


def _one_line_or_ok(capsys, code: int) -> None:
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err[-500:])
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
        assert "Traceback" not in err and len(lines[0]) < 2000
    else:
        assert isinstance(yaml.safe_load(out), dict)


@pytest.mark.parametrize("kind", ["pretrain", "gan", "eval"])
def test_any_override_is_accepted_or_refused_in_one_line(kind, capsys):
    @SETTINGS
    @given(over=overrides(kind))
    def check(over):
        _one_line_or_ok(capsys, main(["config", "show", "--kind", kind, *over]))

    check()


@SETTINGS
@given(doc=st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200)))
def test_any_config_file_is_accepted_or_refused_in_one_line(doc, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(doc)
    _one_line_or_ok(capsys, main(["config", "show", "--config", str(path)]))


@SETTINGS
@given(
    method=st.one_of(st.sampled_from(["sns", "squeeze", "kd", "vicreg", "simsiam", "encode"]), st.text(max_size=8)),
    over=overrides("pretrain"),
)
def test_methods_with_any_overrides(method, over, capsys):
    _one_line_or_ok(capsys, main(["config", "show", "--method", method, *over]))


def test_the_fuzz_reaches_the_limits():
    """The value strategy hits the checks' edge cases at all (not a fuzz that only ever types valid values)."""
    seen = []

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(v=SCALARS)
    def collect(v):
        seen.append(v)

    collect()
    assert {"nan", "1e309", ""} <= set(seen) and any(len(v) > 200 for v in seen)
    assert any(s.lstrip("-").isdigit() and abs(int(s)) > 2**40 for s in seen)
    assert math.isnan(float("nan"))
