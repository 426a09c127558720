"""Hub-format export: a folder with model.safetensors, a timm-style config.json and a README.md model card.

`sns export RUN_DIR --format hub --out DIR` writes it. The folder loads with
``timm.create_model("local-dir:DIR", pretrained=True)`` where timm knows the architecture (every ``timm:NAME``
student; ResNet-18/34/50 with the ImageNet stem at width 1), and always with ``squeezespan.load_backbone(DIR)``
(a ``package.module:factory`` student needs its factory importable): model.safetensors is a regular
squeezespan export whose metadata rides in its safetensors header. The weights are the student's state_dict
without a classifier, so timm builds the model with ``num_classes=0`` (pooled features out).

timm's local-dir loader reads config.json as ``architecture``, ``num_features``, top-level ``num_classes``,
``model_args`` (extra constructor arguments, here ``in_chans``) and ``pretrained_cfg`` (``input_size``,
``interpolation``, ``crop_pct``, ``mean``, ``std``, ``first_conv``, ``classifier``, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import SnsError
from .export import export_backbone, export_paths, load_backbone, read_meta
from .files import atomic_write_text, write_json
from .models.student import TIMM_PREFIX

__all__ = ["TIMM_ARCHS", "export_hub", "hub_config", "resolve_export", "timm_compatible"]

# ResNets whose timm model has the same module names and shapes as our student (ImageNet stem, width 1)
TIMM_ARCHS = ("resnet18", "resnet34", "resnet50")
WEIGHTS = "model.safetensors"
HUB_FILES = (WEIGHTS, "config.json", "README.md")


def resolve_export(source: str | os.PathLike) -> Path:
    """The backbone.safetensors of a `sns pretrain` run dir, or an exported backbone (file, stem or folder)."""
    path = Path(source)
    if path.is_dir() and (path / "backbone.safetensors").exists():
        return path / "backbone.safetensors"
    if not path.exists() and not path.with_suffix(".safetensors").exists():
        raise SnsError(f"{path} does not exist: give a `sns pretrain` run directory or an exported backbone")
    if path.is_dir() and not list(path.glob("*.safetensors")):
        raise SnsError(f"{path} holds no backbone.safetensors: give a `sns pretrain` run directory")
    return export_paths(path)[0]


def _timm_name(meta: dict[str, Any]) -> str | None:
    """The timm model name of a ``timm:NAME`` student, None for other arches."""
    arch = str(meta.get("arch"))
    return arch[len(TIMM_PREFIX) :] if arch.startswith(TIMM_PREFIX) else None


def timm_compatible(meta: dict[str, Any]) -> tuple[bool, str]:
    """(True, "") when timm's own model of meta['arch'] takes these weights; else (False, why not)."""
    if _timm_name(meta):
        return True, ""  # trained as timm's model: its state_dict keys are timm's
    if meta.get("arch") not in TIMM_ARCHS:
        return False, f"timm has no model matching squeezespan's {meta.get('arch')}"
    if meta.get("variant") != "imagenet":
        return False, (
            f"the {meta.get('variant')} stem (3x3 stride-1 conv1, no max-pool) is not a timm ResNet option; "
            "timm would build a 7x7 stride-2 stem that these weights do not fit"
        )
    if float(meta.get("width", 1.0)) != 1.0:
        return False, f"width {meta.get('width')}: timm's ResNet has no width multiplier over every stage"
    return True, ""


def hub_config(meta: dict[str, Any]) -> dict[str, Any]:
    """config.json for the hub folder, in timm's layout, from an export's metadata."""
    channels, res = int(meta["in_channels"]), meta.get("resolution") or 224
    ok, why = timm_compatible(meta)
    timm_name = _timm_name(meta)
    pretrained_cfg = {
        "tag": f"squeezespan_{meta.get('method') or 'unknown'}_{meta.get('dataset') or 'unknown'}",
        "custom_load": False,
        "input_size": [channels, res, res],
        "fixed_input_size": False,
        "interpolation": "bilinear",  # what the data pipeline resizes with (data/pixels.py)
        "crop_pct": 1.0,  # trained on whole images at this resolution, no centre crop
        "crop_mode": "center",
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "num_classes": 0,
        "pool_size": [max(1, res // (32 if meta.get("variant") == "imagenet" else 8))] * 2,
        "first_conv": "conv1",
        "classifier": "fc",
    }
    model_args: dict[str, Any] = {"in_chans": channels}
    config: dict[str, Any] = {"architecture": meta["arch"], "global_pool": "avg"}
    if timm_name:  # timm's own names for its model's first conv, classifier and pooling
        model_args.update(meta.get("arch_kwargs") or {})
        config = {"architecture": timm_name}
        for key in ("pool_size", "first_conv", "classifier", "fixed_input_size"):
            pretrained_cfg.pop(key)
            value = _timm_default_cfg(timm_name).get(key)
            if value is not None:
                pretrained_cfg[key] = value
    return {
        "architecture": config["architecture"],
        "num_classes": 0,
        "num_features": int(meta["feature_dim"]),
        **({"global_pool": config["global_pool"]} if "global_pool" in config else {}),
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
        "squeezespan": {
            "variant": meta.get("variant"),
            "width": meta.get("width"),
            "method": meta.get("method"),
            "dataset": meta.get("dataset"),
            "timm_compatible": ok,
            "note": (
                "timm.create_model('local-dir:DIR', pretrained=True) builds it"
                if ok
                else f"not loadable by timm: {why}; load with squeezespan.load_backbone(DIR)"
            ),
            "input": "timm's model takes images normalised with pretrained_cfg mean/std; "
            "squeezespan.load_backbone(DIR) takes [0, 1] images and normalises inside",
        },
    }


def _timm_default_cfg(name: str) -> dict[str, Any]:
    """timm's default pretrained_cfg of a model as a dict ({} when timm is absent or knows none)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        return {}
    return cfg.to_dict() if cfg is not None else {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _eval_results(run_dir: Path | None, meta: dict[str, Any], config: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the evaluations found for the run: summary.json's kNN, eval.json rows naming it."""
    if run_dir is None:
        return []
    lines = []
    summary = _read_json(run_dir / "summary.json")
    if isinstance(summary, dict) and isinstance(summary.get("knn"), dict):
        knn = summary["knn"]
        lines.append(
            f"| kNN monitor (k={(config or {}).get('knn_k', '?')}) | {meta.get('dataset')} | "
            f"{knn.get('top1', float('nan')):.2f} | {knn.get('top5', float('nan')):.2f} |"
        )
    # `sns eval --out RUN_DIR/...` or the demo's sibling eval/ folder
    for path in (run_dir / "eval.json", run_dir / "eval" / "eval.json", run_dir.parent / "eval" / "eval.json"):
        doc = _read_json(path)
        if not isinstance(doc, dict):
            continue
        for row in doc.get("results", []):
            name = str(row.get("name", ""))
            if path.parent.parent == run_dir.parent and path.parent != run_dir:
                mine = name == run_dir.name or name.endswith(f"({run_dir.name})")
                if not mine:
                    continue
            for probe in ("knn", "linear"):
                r = row.get(probe)
                if isinstance(r, dict) and "top1" in r:
                    top5 = f"{r['top5']:.2f}" if isinstance(r.get("top5"), (int, float)) else "-"
                    lines.append(
                        f"| {probe} ({doc.get('protocol', '?')} protocol, {name}) | {doc.get('data')} | "
                        f"{r['top1']:.2f} | {top5} |"
                    )
    if lines:
        lines = ["| evaluation | data | top-1 | top-5 |", "|---|---|---|---|", *lines]
    return lines


def _card(meta: dict[str, Any], config: dict[str, Any] | None, run_dir: Path | None, hub: dict[str, Any]) -> str:
    ok = hub["squeezespan"]["timm_compatible"]
    arch, method, dataset = meta["arch"], meta.get("method") or "unknown", meta.get("dataset") or "unknown"
    res, channels = meta.get("resolution"), meta["in_channels"]
    tags = ["image-feature-extraction", "squeezespan", f"method-{method}", f"dataset-{dataset}"]
    front = ["---", *(["library_name: timm"] if ok else []), "tags:", *(f"- {t}" for t in tags), "---", ""]
    if meta.get("variant") is None:  # a timm:NAME or package.module:factory student
        title = f"# {arch} distilled with squeezespan"
        if meta.get("arch_kwargs"):
            title += f" (arch_kwargs {json.dumps(meta['arch_kwargs'])})"
    else:
        title = f"# {arch} ({meta['variant']} stem, width {meta['width']:g}) distilled with squeezespan"
    out = [*front, title, ""]
    out += [
        f"A {arch} image encoder trained with **{method}** on **{dataset}** by "
        "squeezespan (Squeeze and Span: representations distilled from a GAN generator). "
        f"It maps {channels}-channel {res}x{res} images to {meta['feature_dim']}-d pooled features; "
        "it has no classifier.",
        "",
        "## Training",
        "",
        f"- method: `{method}`",
        f"- dataset: `{dataset}` at {res}x{res}, mean {meta['mean']}, std {meta['std']}",
    ]
    if config:
        teacher = config.get("teacher")
        out.append(f"- teacher: `{teacher}`" if teacher else "- teacher: none (the method uses real images only)")
        budget = f"{config.get('steps')} step(s)" if config.get("steps") else f"{config.get('epochs')} epochs"
        out.append(
            f"- budget: {budget}, batch size {config.get('batch_size')}, lr {config.get('lr')}, "
            f"seed {config.get('seed')}"
        )
    else:
        out.append("- teacher, budget: unknown (no config.yaml next to the exported backbone)")
    for key in ("steps", "epoch", "squeezespan_version"):
        if key in meta and not (config and key == "steps"):
            out.append(f"- {key}: {meta[key]}")
    out += ["", "## Evaluation", ""]
    results = _eval_results(run_dir, meta, config)
    out += results or ["No evaluation results were found in the run directory (run `sns eval --backbone RUN_DIR`)."]
    out += ["", "## Use", "", "```python"]
    if ok:
        out += [
            "import timm",
            'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()',
            "# takes images normalised with config.json's pretrained_cfg mean/std; returns pooled features",
            "",
        ]
    out += [
        "import squeezespan",
        'backbone = squeezespan.load_backbone("PATH/TO/THIS/FOLDER")  # [0, 1] images in, normalisation inside',
        "features = backbone(images)",
        "```",
        "",
    ]
    if not ok:
        out += [f"Not loadable by timm: {timm_compatible(meta)[1]}. Use `squeezespan.load_backbone`.", ""]
    entry = f"squeezespan_{arch}" if meta.get("variant") is not None else "squeezespan_backbone"  # hubconf.py
    out += [
        "torch.hub (a squeezespan checkout, no download): "
        f'`torch.hub.load(REPO_DIR, "{entry}", weights="PATH/TO/THIS/FOLDER", source="local")`.',
        "",
    ]
    if meta.get("variant") is None and not _timm_name(meta):
        out += [f"`squeezespan.load_backbone` imports the factory `{arch}`: it must be importable (PYTHONPATH).", ""]
    out += ["## Reproduce", ""]
    if config:
        out += [
            "Save this run configuration as `config.yaml` (the `teacher` path must point at the same teacher) and run "
            "`sns pretrain --config config.yaml --out runs/reproduced`:",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    else:
        out += ["The run's config.yaml was not found next to the exported backbone.", ""]
    out += [
        "## Intended use and limits",
        "",
        f"- A feature extractor for research on {dataset}-like images at {res}x{res}: kNN or linear probes, "
        "fine-tuning, comparisons of distillation methods.",
        "- Features are only as good as the teacher and data: a small teacher or a short run gives weak features; "
        "check the evaluation above on your own data before relying on them.",
        "- Images far from the training distribution (other resolutions, channel counts, domains) are out of scope.",
        "- The weights inherit the terms and the biases of the training data and of the GAN teacher.",
        "",
    ]
    return "\n".join(out)


def export_hub(source: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Write a hub folder (model.safetensors, config.json, README.md) from a run dir or an exported backbone.

    Args:
        source: a `sns pretrain` run directory (its backbone.safetensors, config.yaml, summary.json and any
            eval.json are used) or an exported backbone.
        out: the folder to write; it must be absent or empty unless ``force``.
        force: write into a non-empty folder (the three files are replaced).

    Returns:
        ``out`` as a Path.
    """
    st_path = resolve_export(source)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SnsError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SnsError(f"--out {out} is not empty; pass --force to write the hub files into it")
    if out.resolve() == st_path.parent.resolve():
        raise SnsError(f"--out {out} is the run directory itself: give a new folder")
    meta = read_meta(st_path)
    backbone = load_backbone(st_path)
    run_dir = st_path.parent if (st_path.parent / "config.yaml").exists() else None
    config = None
    if run_dir is not None:
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            config = None
    keep = {k: v for k, v in meta.items() if k not in ("format", "weights", "input", "torchvision_compat")}
    out.mkdir(parents=True, exist_ok=True)
    _, json_path = export_backbone(backbone.student, out / WEIGHTS, keep)
    json_path.unlink()  # the metadata also rides in model.safetensors' header: load_backbone(out) reads it there
    hub = hub_config(read_meta(out / WEIGHTS))
    write_json(out / "config.json", hub)
    atomic_write_text(out / "README.md", _card(meta, config if isinstance(config, dict) else None, run_dir, hub))
    return out
