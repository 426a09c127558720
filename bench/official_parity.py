"""Parity of our StyleGAN2 (loaded from an official pickle by the safe importer) with NVIDIA's own code.

Needs a checkout of NVlabs/stylegan2-ada-pytorch that YOU provide (none is shipped with squeezespan):

    python bench/official_parity.py --official-src /path/to/stylegan2-ada-pytorch

Two child processes, so that NVIDIA's code and ours never share an interpreter:
  1. official: with --official-src on sys.path, build training.networks.Generator/Discriminator per config
     in fp32, jitter the weights (biases, noise strengths and w_avg start at 0 and would hide mistakes),
     write the pickle the way NVIDIA's training loop does (pickle.dump of a dict of deep copies), run
     G_ema(z, noise_mode='const') with force_fp32 and hooks on synthesis blocks, and D on those images.
  2. ours: WITHOUT the checkout on sys.path, squeezespan.load_stylegan2_pickle on that file, same inputs,
     same hooks; assert no torch_utils/dnnlib module got imported; report max |ours - official|.
     The networks.py a release checkout embeds in the pickle matches squeezespan's fingerprint of that
     release (recorded as embedded_source); a modified checkout is refused unless --allow-unknown-source.
Results go to bench/results/official_parity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> official constructor kwargs. 'cifar' is train.py's --cfg=cifar (fmaps=1 -> channel_base 32768,
# map=2, mbstd=32, D 'orig', conv_clamp 256); num_fp16_res is 0 because fp16 crawls on CPU and parity is
# checked in fp32. 'cifar-fp16' keeps train.py's num_fp16_res=4 in the pickle and runs the official code
# with force_fp32=True: our G ignores the fp16 flags, so it must match that.
CONFIGS = {
    "cifar": dict(
        res=32,
        c_dim=0,
        G=dict(
            z_dim=512,
            w_dim=512,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=256),
        ),
        D=dict(
            architecture="orig",
            channel_base=32768,
            channel_max=512,
            num_fp16_res=0,
            conv_clamp=256,
            block_kwargs={},
            mapping_kwargs={},
            epilogue_kwargs=dict(mbstd_group_size=32),
        ),
    ),
    "cifar-fp16": dict(
        res=32,
        c_dim=0,
        G=dict(
            z_dim=512,
            w_dim=512,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
        ),
        D=dict(
            architecture="orig",
            channel_base=32768,
            channel_max=512,
            num_fp16_res=4,
            conv_clamp=256,
            block_kwargs={},
            mapping_kwargs={},
            epilogue_kwargs=dict(mbstd_group_size=32),
        ),
    ),
    # train.py 'paper256' (fmaps=0.5, map=8, mbstd=8, G skip / D resnet) at 64 px to stay quick on a CPU.
    "paper256@64": dict(
        res=64,
        c_dim=0,
        G=dict(
            z_dim=512,
            w_dim=512,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=256),
        ),
        D=dict(
            channel_base=16384,
            channel_max=512,
            num_fp16_res=0,
            conv_clamp=256,
            block_kwargs={},
            mapping_kwargs={},
            epilogue_kwargs=dict(mbstd_group_size=8),
        ),
    ),
    # Paths the paper configs skip: labels (embed + D projection), resnet G, skip D, no clamp, 1 channel.
    "tiny-cond-resnet": dict(
        res=16,
        c_dim=10,
        img_channels=1,
        G=dict(
            z_dim=64,
            w_dim=64,
            mapping_kwargs=dict(num_layers=3),
            synthesis_kwargs=dict(channel_base=1024, channel_max=64, architecture="resnet"),
        ),
        D=dict(
            architecture="skip",
            channel_base=1024,
            channel_max=64,
            block_kwargs={},
            mapping_kwargs={},
            epilogue_kwargs=dict(mbstd_group_size=4),
        ),
    ),
    # Every kwarg spelled out the way legacy.py writes them for TF-converted pickles (NVIDIA's released
    # cifar10.pkl is one), with the 'orig' G that lacks skip ToRGBs and D mapping with 0 layers.
    "legacy-kwargs-orig": dict(
        res=32,
        c_dim=10,
        G=dict(
            z_dim=64,
            w_dim=64,
            mapping_kwargs=dict(
                num_layers=2,
                embed_features=None,
                layer_features=None,
                activation="lrelu",
                lr_multiplier=0.01,
                w_avg_beta=0.995,
            ),
            synthesis_kwargs=dict(
                channel_base=2048,
                channel_max=64,
                num_fp16_res=0,
                conv_clamp=None,
                architecture="orig",
                resample_filter=[1, 3, 3, 1],
                use_noise=True,
                activation="lrelu",
            ),
        ),
        D=dict(
            architecture="resnet",
            channel_base=2048,
            channel_max=64,
            num_fp16_res=0,
            conv_clamp=None,
            cmap_dim=None,
            block_kwargs=dict(activation="lrelu", resample_filter=[1, 3, 3, 1], freeze_layers=0),
            mapping_kwargs=dict(
                num_layers=0, embed_features=None, layer_features=None, activation="lrelu", lr_multiplier=0.1
            ),
            epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=1, activation="lrelu"),
        ),
    ),
}

TOLERANCE = 1e-4


def _inputs(cfg: dict, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg["G"]["z_dim"], generator=g)
    c = None
    if cfg["c_dim"]:
        c = torch.nn.functional.one_hot(torch.randint(cfg["c_dim"], (n,), generator=g), cfg["c_dim"]).float()
    return z, c


def _run(G, D, z, c, block_kwargs: dict) -> dict:
    """Images (truncation 1 and 0.7), each synthesis block's (x, img), and D logits, in each side's own sampling
    form (ours: the faster one for the device, batched on a CPU; NVIDIA's: grouped in fp32); the image again
    explicitly grouped (fused) and unfused."""
    import torch

    out = {}
    taps = {}
    hooks = [
        getattr(G.synthesis, f"b{r}").register_forward_hook(lambda m, i, o, r=r: taps.__setitem__(r, o))
        for r in G.synthesis.block_resolutions
    ]
    with torch.no_grad():
        out["img"] = G(z, c, noise_mode="const", **block_kwargs)
        for r, (x, img) in sorted(taps.items()):
            out[f"b{r}.x"] = x.float()
            if img is not None:  # a resnet G makes an image only in its last block
                out[f"b{r}.img"] = img.float()
        for h in hooks:
            h.remove()
        out["img_psi0.7"] = G(z, c, truncation_psi=0.7, noise_mode="const", **block_kwargs)
        out["img_unfused"] = G(z, c, noise_mode="const", fused_modconv=False, **block_kwargs)
        out["img_grouped"] = G(z, c, noise_mode="const", fused_modconv=True, **block_kwargs)
        out["D_logits"] = D(out["img"], c, **block_kwargs)
    return {k: v.contiguous() for k, v in out.items()}


def phase_official(src: str, work: Path, names: list[str], n: int, seed: int) -> None:
    import copy
    import pickle
    import types

    sys.path.insert(0, src)
    # dnnlib.util imports requests for URL downloads we never make; a stub lets it import without it.
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    import torch
    from training import networks  # NVIDIA's, from the user's checkout

    for name in names:
        cfg = CONFIGS[name]
        torch.manual_seed(seed)
        common = dict(c_dim=cfg["c_dim"], img_resolution=cfg["res"], img_channels=cfg.get("img_channels", 3))
        G = networks.Generator(**cfg["G"], **common)
        D = networks.Discriminator(**cfg["D"], **common)
        with torch.no_grad():
            for net in (G, D):
                for pname, p in list(net.named_parameters()) + list(net.named_buffers()):
                    if not pname.endswith("resample_filter"):
                        p.add_(
                            torch.randn_like(p) * (0.2 if pname.endswith(("noise_strength", "bias", "w_avg")) else 0.02)
                        )
        G_ema = copy.deepcopy(G).eval()
        snapshot = dict(training_set_kwargs=dict(resolution=cfg["res"], use_labels=bool(cfg["c_dim"])))
        for key, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            snapshot[key] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        with open(work / f"{name}.pkl", "wb") as f:
            pickle.dump(snapshot, f)
        z, c = _inputs(cfg, n, seed)
        t0 = time.time()
        out = _run(snapshot["G_ema"], snapshot["D"], z, c, dict(force_fp32=True))
        out["_seconds"] = torch.tensor(time.time() - t0)
        torch.save(out, work / f"{name}.official.pt")


def phase_ours(work: Path, names: list[str], n: int, seed: int, allow_unknown_source: bool = False) -> dict:
    import torch

    from squeezespan import load_stylegan2_pickle
    from squeezespan.teachers.pickle_import import embedded_sources, read_stylegan2_pickle

    results = {}
    for name in names:
        cfg = CONFIGS[name]
        t0 = time.time()
        G = load_stylegan2_pickle(work / f"{name}.pkl", key="G_ema", allow_unknown_source=allow_unknown_source)
        D = load_stylegan2_pickle(work / f"{name}.pkl", key="D", allow_unknown_source=allow_unknown_source)
        load_s = time.time() - t0
        data = read_stylegan2_pickle(work / f"{name}.pkl")
        sources = embedded_sources({k: data[k] for k in ("G_ema", "D")}, name, allow_unknown_source, log=lambda m: None)
        z, c = _inputs(cfg, n, seed)
        t0 = time.time()
        ours = _run(G, D, z, c, {})
        ours_s = time.time() - t0
        official = torch.load(work / f"{name}.official.pt", weights_only=True)
        diffs = {k: float((ours[k] - official[k]).abs().max()) for k in ours}
        results[name] = dict(
            config=cfg,
            n=n,
            seed=seed,
            max_abs_diff=diffs,
            worst=max(diffs.values()),
            official_img_abs_max=float(official["img"].abs().max()),
            passed=max(diffs.values()) <= TOLERANCE,
            embedded_source=[e["official"] or f"unknown sha256 {e['sha256']}" for e in sources],
            seconds=dict(load=round(load_s, 2), ours=round(ours_s, 2), official=round(float(official["_seconds"]), 2)),
        )
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib", "training"))
    if leaked:
        raise SystemExit(f"official modules were imported while loading: {leaked}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-src", help="path of a NVlabs/stylegan2-ada-pytorch checkout (not shipped)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--n", type=int, default=16, help="images per config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "official_parity.json"))
    ap.add_argument("--official-commit", help="commit of the checkout, recorded when it is not a git work tree")
    ap.add_argument(
        "--allow-unknown-source",
        action="store_true",
        help="load pickles whose networks.py is no official release (a modified checkout), with a warning",
    )
    ap.add_argument("--phase", choices=["official", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase == "official":
        phase_official(args.official_src, Path(args.work), args.configs, args.n, args.seed)
        return
    if args.phase == "ours":
        print(json.dumps(phase_ours(Path(args.work), args.configs, args.n, args.seed, args.allow_unknown_source)))
        return

    if not args.official_src or not (Path(args.official_src) / "training" / "networks.py").is_file():
        ap.error("--official-src must point at a stylegan2-ada-pytorch checkout (with training/networks.py)")
    src = str(Path(args.official_src).resolve())
    common = ["--configs", *args.configs, "--n", str(args.n), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory(prefix="sns_parity_") as work:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run(
            [sys.executable, __file__, "--phase", "official", "--official-src", src, "--work", work, *common],
            check=True,
            env=env,
        )
        ours = ["--allow-unknown-source"] if args.allow_unknown_source else []
        done = subprocess.run(
            [sys.executable, __file__, "--phase", "ours", "--work", work, *common, *ours],
            check=True,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )
    import torch

    results = json.loads(done.stdout.strip().splitlines()[-1])
    record = dict(
        what="max |ours - official| on CPU in fp32, same z, noise_mode='const'; ours loaded by "
        "squeezespan.load_stylegan2_pickle from a pickle written by the official code",
        tolerance=TOLERANCE,
        torch=torch.__version__,
        python=platform.python_version(),
        official_commit=args.official_commit or _git_head(src),
        configs=results,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for name, r in results.items():
        print(
            f"{name:18s} worst {r['worst']:.2e}  img {r['max_abs_diff']['img']:.2e}  "
            f"D {r['max_abs_diff']['D_logits']:.2e}  {'ok' if r['passed'] else 'FAIL'}"
        )
    if not all(r["passed"] for r in results.values()):
        raise SystemExit(1)


def _git_head(src: str) -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
