"""Config resolution: defaults < preset < file < flags < key=value, with clear errors."""

import pytest

from squeezespan.config import list_presets, parse_override, resolve_config
from squeezespan.errors import SnsError
from squeezespan.gan import GAN_DEFAULTS
from squeezespan.pretraining import PRETRAIN_DEFAULTS

DEFAULTS = {"lr": 0.03, "steps": 0, "name": "x", "flag": False, "opt": None, "augment": {"blur_p": 0.5}}


def test_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.1\nsteps: 5\n")
    cfg = resolve_config(DEFAULTS, "pretrain", None, str(f), ["steps=7", "augment.blur_p=0"], {"name": "y"})
    assert cfg == {"lr": 0.1, "steps": 7, "name": "y", "flag": False, "opt": None, "augment": {"blur_p": 0.0}}
    assert DEFAULTS["lr"] == 0.03  # defaults untouched


def test_override_values_parse_as_yaml():
    assert parse_override("a=1e-3") == ("a", 1e-3)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=null") == ("a", None)


@pytest.mark.parametrize(
    "override, match",
    [
        (["lrr=1"], "unknown key 'lrr'.*lr"),
        (["augment.blurp=1"], "unknown key 'augment.blurp'.*blur_p"),
        (["lr=fast"], "'lr' must be float"),
        (["steps=true"], "'steps' must be int"),
        (["augment=3"], "is a section"),
        (["noequals"], "not a key=value"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(SnsError, match=match):
        resolve_config(DEFAULTS, "pretrain", overrides=override)


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("lr: [1, 2\n")
    with pytest.raises(SnsError, match=r"bad.yaml is not valid YAML at line"):
        resolve_config(DEFAULTS, "pretrain", config_file=str(f))
    f.write_text("- 1\n- 2\n")
    with pytest.raises(SnsError, match="must hold a YAML mapping"):
        resolve_config(DEFAULTS, "pretrain", config_file=str(f))
    with pytest.raises(SnsError, match="does not exist"):
        resolve_config(DEFAULTS, "pretrain", config_file=str(tmp_path / "missing.yaml"))


def test_unknown_preset():
    with pytest.raises(SnsError, match="--preset 'nope' is unknown"):
        resolve_config(DEFAULTS, "pretrain", preset="nope")


def test_every_shipped_preset_resolves():
    """A preset with a typo'd key would only fail when a user picks it: resolve them all here."""
    defaults = {"pretrain": PRETRAIN_DEFAULTS, "gan": GAN_DEFAULTS}
    names = list_presets("pretrain")
    assert {"digits", "fashion-cpu", "cifar10", "cifar100"} <= set(names)
    for kind, d in defaults.items():
        for name in list_presets(kind):
            cfg = resolve_config(d, kind, preset=name)
            assert cfg, name


def test_bf16_takes_true_false_or_auto():  # the old spelling of precision (tests/test_precision.py)
    for value, want in (("true", "bf16"), ("false", "fp32"), ("auto", "auto"), ("AUTO", "auto")):
        assert resolve_config(PRETRAIN_DEFAULTS, "pretrain", overrides=[f"bf16={value}"])["precision"] == want
    with pytest.raises(SnsError, match="bf16='fast' must be true, false or auto"):
        resolve_config(PRETRAIN_DEFAULTS, "pretrain", overrides=["bf16=fast"])
    with pytest.raises(SnsError, match="'flag' must be bool"):  # 'auto' is only for the keys that decide per device
        resolve_config(DEFAULTS, "pretrain", overrides=["flag=auto"])


@pytest.mark.parametrize(
    "old, new",
    [
        ("batch", "batch_size"),
        ("log_steps", "log_every"),
        ("snapshot_kimg", "ckpt_every"),
        ("keep_checkpoints", "keep_ckpts"),
    ],
)
def test_renamed_gan_keys_name_the_new_key(old, new, tmp_path):
    """train-gan speaks pretrain's vocabulary; an old name is a one-line error naming the new one."""
    with pytest.raises(SnsError, match=rf"^override '{old}=8': config key '{old}' was renamed to '{new}'"):
        resolve_config(GAN_DEFAULTS, "gan", overrides=[f"{old}=8"])
    f = tmp_path / "old.yaml"
    f.write_text(f"lr: 0.002\n{old}: 8\n")
    with pytest.raises(SnsError, match=rf"old.yaml: config key '{old}' was renamed to '{new}'") as e:
        resolve_config(GAN_DEFAULTS, "gan", config_file=str(f))
    assert "\n" not in str(e.value)


def test_renamed_snapshot_kimg_says_its_new_unit():
    with pytest.raises(SnsError, match=r"'ckpt_every' \(now counted in training steps"):
        resolve_config(GAN_DEFAULTS, "gan", overrides=["snapshot_kimg=4"])
    # renames are per kind: pretrain never had 'batch', so it stays an unknown key there
    with pytest.raises(SnsError, match="unknown key 'batch'"):
        resolve_config(DEFAULTS, "pretrain", overrides=["batch=8"])


def test_train_gan_split_is_named_as_in_pretrain():
    assert "train_split" in GAN_DEFAULTS and "train_split" in PRETRAIN_DEFAULTS and "split" not in GAN_DEFAULTS
    with pytest.raises(SnsError, match="config key 'split' was renamed to 'train_split'"):
        resolve_config(GAN_DEFAULTS, "gan", overrides=["split=train"])


def test_description_is_no_config_key_and_every_preset_has_one(tmp_path, monkeypatch):
    import squeezespan.config as config
    from squeezespan.config import PRESET_DIR, load_preset, preset_description

    for name in list_presets():
        assert preset_description(name), name
        assert "description" not in load_preset(name, "gan" if name.startswith("gan-") else "pretrain")
    f = tmp_path / "c.yaml"
    f.write_text("description: my variant\nlr: 0.1\n")
    assert resolve_config(DEFAULTS, "pretrain", config_file=str(f))["lr"] == 0.1
    # a preset without the key: its first comment line
    (tmp_path / "p.yaml").write_text("# A preset that says what it is.\n# more\nkind: pretrain\nlr: 0.2\n")
    monkeypatch.setattr(config, "PRESET_DIR", tmp_path)
    assert preset_description("p") == "A preset that says what it is."
    assert resolve_config(DEFAULTS, "pretrain", preset="p")["lr"] == 0.2
    assert PRESET_DIR != tmp_path
