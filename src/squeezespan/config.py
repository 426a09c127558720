"""Run configuration: defaults in one place, overridden by a preset, a YAML file and key=value pairs."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import SnsError

PRESET_DIR = Path(__file__).parent / "configs"

# Keys that were renamed, per kind of run, so that pretrain and train-gan share one vocabulary of knobs: an old
# name is a one-line error naming the new one (never silently ignored or translated).
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "gan": {
        "batch": "batch_size",
        "log_steps": "log_every",
        "snapshot_kimg": "ckpt_every",
        "keep_checkpoints": "keep_ckpts",
        "split": "train_split",
    },
}
# what else changed with a rename, appended to its error
RENAME_NOTES: dict[str, str] = {
    "snapshot_kimg": "now counted in training steps, as in pretrain: ckpt_every = snapshot_kimg * 1000 / batch_size",
}


def check_renamed(kind: str, keys: Iterable[str], source: str) -> None:
    """Raise a one-line SnsError for the first key of ``keys`` that ``kind`` renamed (see RENAMED_KEYS).

    Args:
        kind: the kind of run ("pretrain", "gan", ...).
        keys: top-level config keys as given (dotted keys count by their first part).
        source: where the keys came from, to start the message ("--config x.yaml", "override 'batch=8'").
    """
    table = RENAMED_KEYS.get(kind, {})
    for key in keys:
        old = str(key).split(".")[0]
        if old in table:
            note = f" ({RENAME_NOTES[old]})" if old in RENAME_NOTES else ""
            raise SnsError(f"{source}: config key {old!r} was renamed to {table[old]!r}{note}")


# Old spellings of a key: old key -> (the key that replaced it, what each old value means there). Any layer (a
# preset, a --config file or a run's config.yaml, the flags, the key=value overrides) may use either spelling where
# the run's defaults hold the new key; one layer giving both with values that disagree is a one-line error.
ALIASES: dict[str, tuple[str, dict[Any, Any]]] = {
    "bf16": ("precision", {True: "bf16", False: "fp32", "auto": "auto", None: None}),
}
_ALIAS_TARGETS = frozenset(new for new, _ in ALIASES.values())
_NO_MEANING = object()


def _show(value: Any) -> str:
    """A value as the user wrote it (true, null, 'fp16')."""
    if value is None or isinstance(value, bool):
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def _alias_value(raw: Any, meaning: dict[Any, Any]) -> Any:
    if isinstance(raw, str):
        raw = raw.lower()
    elif not (raw is None or isinstance(raw, bool)):
        return _NO_MEANING  # 1 is not true here
    return meaning.get(raw, _NO_MEANING)


def apply_aliases(data: dict[str, Any], defaults: dict[str, Any], source: str) -> dict[str, Any]:
    """One layer's keys with every old spelling (ALIASES) turned into the key that replaced it.

    Args:
        data: the layer's top-level keys as given (not modified).
        defaults: the run's defaults; an alias applies only where they hold its new key.
        source: where the layer came from, to start an error ("--config x.yaml", "key=value overrides").

    Returns:
        A copy of ``data`` without old keys (``bf16=true`` becomes ``precision=bf16``).

    Raises:
        SnsError: an old key's value means nothing, or the layer gives both keys with values that disagree.
    """
    out = dict(data)
    for old, (new, meaning) in ALIASES.items():
        if old not in out or new not in defaults:
            continue
        raw = out.pop(old)
        value = _alias_value(raw, meaning)
        if value is _NO_MEANING:
            words = [k if isinstance(k, str) else _show(k) for k in meaning if k is not None]
            expected = ", ".join(words[:-1]) + f" or {words[-1]}"
            raise SnsError(f"{source}: {old}={_show(raw)} must be {expected} ({old} is the old spelling of {new})")
        given = out.get(new)
        if given is not None and value is not None and given != value:
            raise SnsError(
                f"{source}: {old}={_show(raw)} and {new}={_show(given)} disagree ({old}={_show(raw)} means "
                f"{new}={_show(value)}); give only {new}"
            )
        if given is None:
            out[new] = value
    return out


def list_presets(kind: str | None = None) -> list[str]:
    """Preset names (file stems in configs/); ``kind`` filters by the preset's own ``kind:`` field."""
    names = []
    for p in sorted(PRESET_DIR.glob("*.yaml")):
        if kind is None or _read_yaml(p).get("kind", "pretrain") == kind:
            names.append(p.stem)
    return names


# keys of a preset or --config file that describe it and are no config keys: `kind:` (which run it is for),
# `description:` (its one line in `sns presets`)
META_KEYS = ("kind", "description")


def preset_description(name: str) -> str:
    """A preset's one-line description: its ``description:`` key, else its first comment line ('' if none)."""
    path = PRESET_DIR / f"{name}.yaml"
    text = _read_yaml(path, "--preset").get("description")
    if text:
        return " ".join(str(text).split())
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def _read_yaml(path: str | Path, what: str = "--config") -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SnsError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise SnsError(f"{what} {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SnsError(f"{what} {path} is not UTF-8 text (byte {e.start}): expected a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # PyYAML's own text spans lines
        raise SnsError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SnsError(f"{what} {path} must hold a YAML mapping of config keys, got {type(data).__name__}")
    return data


def load_preset(name: str, kind: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists() or name not in list_presets(kind):
        raise SnsError(f"--preset {name!r} is unknown; {kind} presets: {', '.join(list_presets(kind)) or 'none'}")
    data = _read_yaml(path, "--preset")
    for key in META_KEYS:
        data.pop(key, None)
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3); the value is parsed as YAML so numbers, booleans, lists and null work."""
    if "=" not in item or item.startswith("="):
        raise SnsError(f"argument {item!r} is not a key=value override (e.g. lr=0.05 or augment.blur_p=0)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string; users mean the number
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def _set_dotted(cfg: dict[str, Any], key: str, value: Any, defaults: dict[str, Any], source: str) -> None:
    parts = key.split(".")
    node, dnode = cfg, defaults
    for i, part in enumerate(parts):
        if not isinstance(dnode, dict) or part not in dnode:
            scope = ".".join(parts[:i]) or "config"
            valid = ", ".join(sorted(dnode)) if isinstance(dnode, dict) else "(none: not a section)"
            raise SnsError(f"{source}: unknown key {key!r}; valid keys in {scope}: {valid}")
        if i == len(parts) - 1:
            if isinstance(dnode[part], dict) and not isinstance(value, dict):
                raise SnsError(f"{source}: {key!r} is a section; set its fields, e.g. {key}.<field>=...")
            node[part] = value
        else:
            node, dnode = node[part], dnode[part]


def _merge(cfg: dict[str, Any], data: dict[str, Any], defaults: dict[str, Any], source: str, prefix: str = "") -> None:
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(_lookup(defaults, key), dict):
            _merge(cfg, v, defaults, source, key + ".")
        else:
            _set_dotted(cfg, key, v, defaults, source)


def _lookup(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def resolve_config(
    defaults: dict[str, Any],
    kind: str,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """defaults < preset < --config file < explicit flags (``extra``) < key=value overrides."""
    cfg = copy.deepcopy(defaults)
    if preset:
        data = load_preset(preset, kind)
        check_renamed(kind, data, f"preset {preset}")
        data = apply_aliases(data, defaults, f"preset {preset}")
        _merge(cfg, data, defaults, f"preset {preset}")
    if config_file:
        data = _read_yaml(config_file)
        data.pop("description", None)  # a config file may describe itself, as presets do
        check_renamed(kind, data, f"--config {config_file}")
        data = apply_aliases(data, defaults, f"--config {config_file}")
        _merge(cfg, data, defaults, f"--config {config_file}")
    extra = apply_aliases({k: v for k, v in (extra or {}).items() if v is not None}, defaults, "flags")
    for k, v in extra.items():
        _set_dotted(cfg, k, v, defaults, f"--{k.replace('_', '-')}")
    parsed = [(item, *parse_override(item)) for item in overrides]
    # the overrides are one layer: an old key and its new one among them must agree, in any order
    apply_aliases({k: v for _, k, v in parsed if k in ALIASES or k in _ALIAS_TARGETS}, defaults, "key=value overrides")
    for item, k, v in parsed:
        check_renamed(kind, [k], f"override {item!r}")
        ((k, v),) = apply_aliases({k: v}, defaults, f"override {item!r}").items()
        _set_dotted(cfg, k, v, defaults, f"override {item!r}")
    _check_types(cfg, defaults)
    return cfg


# true/false settings that also take 'auto' (sns eval's bf16), decided for the device when it starts (resolve_bf16)
AUTO_BOOL_KEYS = frozenset({"bf16"})


def _check_types(cfg: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> None:
    """A value must have the default's type (ints may stand for floats; None defaults accept anything)."""
    for k, dv in defaults.items():
        v, key = cfg.get(k), f"{prefix}{k}"
        if dv is None or v is None:
            continue
        if isinstance(dv, float) and isinstance(v, str):
            try:  # `lr: 1e-3` in a YAML file is a string to YAML 1.1
                v = cfg[k] = float(v)
            except ValueError:
                pass
        if isinstance(dv, dict):
            _check_types(v, dv, key + ".")
            continue
        if k in AUTO_BOOL_KEYS and isinstance(v, str) and v.lower() == "auto":
            continue
        ok = (
            isinstance(v, type(dv))
            or (isinstance(dv, float) and isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(dv, (list, tuple)) and isinstance(v, (list, tuple)))
        )
        if isinstance(dv, int) and not isinstance(dv, bool) and isinstance(v, bool):
            ok = False
        if not ok:
            raise SnsError(f"config key {key!r} must be {type(dv).__name__}, got {v!r}")
        if isinstance(dv, float) and isinstance(v, int):
            cfg[k] = float(v)
