"""FD-ref: an offline fidelity metric, the Frechet distance in the feature space of a reference CNN we train ourselves.

Not FID: FID uses ImageNet Inception-v3 features, which cannot be downloaded here. FD-ref uses a small CNN
trained on the same dataset (supervised when labels exist, rotation prediction otherwise), cached per
dataset/resolution. Values are comparable only under the same reference net and the same sample counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ..data.diffaug import augment_translation
from ..engine.device import resolve_bf16
from ..errors import SnsError
from ..files import atomic_write_bytes, safetensors_bytes

REF_VERSION = 1


class ReferenceNet(nn.Module):
    """Small VGG-style CNN on [0, 1] images; ``features`` is the pooled penultimate layer FD-ref compares."""

    def __init__(self, in_channels: int, resolution: int, num_outputs: int, width: int = 16):
        super().__init__()
        self.init_kwargs = dict(in_channels=in_channels, resolution=resolution, num_outputs=num_outputs, width=width)
        self.in_channels, self.resolution = in_channels, resolution

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        # Downsample early: the net must train in a minute or two on a busy CPU.
        self.body = nn.Sequential(
            *block(in_channels, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w),
            nn.MaxPool2d(2),
            *block(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 8 * w
        self.head = nn.Linear(8 * w, num_outputs)

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.shape[1] != self.in_channels:
            raise SnsError(
                f"FD-ref reference net expects {self.in_channels}-channel images, got {x01.shape[1]}; "
                "compare images of the dataset the reference net was trained on"
            )
        if x01.shape[-1] != self.resolution or x01.shape[-2] != self.resolution:
            x01 = F.interpolate(
                x01, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True
            )
        return self.body(x01 * 2.0 - 1.0)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x01))


# ---------------------------------------------------------------------------------------------- the formula


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) for Gaussians N(mu1, S1), N(mu2, S2), in float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)) and the inner matrix is symmetric PSD, so an
    eigendecomposition gives the trace without the complex round-off a general sqrtm produces.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise SnsError(
            f"Frechet distance needs matching shapes, got mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}"
        )
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    evals1, evecs1 = np.linalg.eigh(s1)
    sqrt_s1 = (evecs1 * np.sqrt(np.clip(evals1, 0, None))) @ evecs1.T
    inner = sqrt_s1 @ s2 @ sqrt_s1
    evals = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(evals, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def feature_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features in float64."""
    f = features.detach().double().cpu().numpy() if torch.is_tensor(features) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise SnsError(f"FD-ref needs at least 2 feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


# ------------------------------------------------------------------------------------------- features/stats


def _net_device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def ref_features(images: torch.Tensor, ref_net: ReferenceNet, batch_size: int = 250) -> torch.Tensor:
    """(N, D) float32 reference features of images that are float [0, 1] or uint8 [0, 255]."""
    was_training = ref_net.training
    ref_net.eval()
    dev = _net_device(ref_net)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(dev)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
        out.append(ref_net.features(x).float().cpu())
    ref_net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, ref_net.feature_dim)


def ref_stats(images: torch.Tensor, ref_net: ReferenceNet, batch_size: int = 250) -> tuple[np.ndarray, np.ndarray]:
    return feature_stats(ref_features(images, ref_net, batch_size))


def fd_ref(
    real_images01: torch.Tensor, fake_images01: torch.Tensor, ref_net: ReferenceNet, batch_size: int = 250
) -> float:
    """FD-ref between two image sets (float [0, 1] or uint8), each (N, C, H, W) with N >= 2."""
    mu1, s1 = ref_stats(real_images01, ref_net, batch_size)
    mu2, s2 = ref_stats(fake_images01, ref_net, batch_size)
    return frechet_distance(mu1, s1, mu2, s2)


@torch.no_grad()
def generator_stats(
    G: nn.Module,
    ref_net: ReferenceNet,
    num_images: int,
    seed: int = 0,
    batch_size: int = 250,
    truncation_psi: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference-feature stats of ``num_images`` samples of G (z from its own seeded generator: no global RNG)."""
    dev = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    feats = []
    was_training = G.training
    G.eval()
    for i in range(0, num_images, batch_size):
        n = min(batch_size, num_images - i)
        z = torch.randn(n, G.z_dim, generator=gen).to(dev)
        c = torch.zeros(n, getattr(G, "c_dim", 0), device=dev)
        img = G(z, c, truncation_psi=truncation_psi, noise_mode="const")
        feats.append(ref_features((img.float() + 1) / 2, ref_net, batch_size))
    G.train(was_training)
    return feature_stats(torch.cat(feats))


# ------------------------------------------------------------------------------------- training and caching


def default_cache_dir() -> Path:
    base = os.environ.get("SNS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "squeezespan"
    )
    return Path(base) / "fdref"


def _cache_key(dataset, settings: dict[str, Any]) -> str:
    images = dataset.images
    # The content hash keeps a changed dataset (other split, new files) from reusing a stale net.
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images[:: max(1, images.shape[0] // 512)].contiguous().numpy().tobytes())
    name = str(getattr(dataset, "name", "data")).replace("/", "_")
    return f"{name}-{images.shape[-1]}px-{images.shape[1]}ch-v{REF_VERSION}-{h.hexdigest()[:12]}"


def save_reference_net(net: ReferenceNet, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    info = {"format": f"squeezespan-fdref/{REF_VERSION}", "init_kwargs": net.init_kwargs, **meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, safetensors_bytes(state, metadata={"squeezespan": json.dumps(info)}))
    return path


def load_reference_net(path: str | os.PathLike, device: str | torch.device = "cpu") -> ReferenceNet:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["squeezespan"])
        state = load_file(str(path))
    except FileNotFoundError:
        raise SnsError(f"FD-ref reference net {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad file for the user
        raise SnsError(
            f"FD-ref reference net {path} cannot be read ({type(e).__name__}); delete it to retrain"
        ) from None
    net = ReferenceNet(**info["init_kwargs"])
    net.load_state_dict(state)
    net.meta = info
    return net.to(device).eval()


def train_reference_net(
    dataset,
    *,
    epochs: int = 15,
    max_images: int = 60_000,
    max_seconds: float = 240.0,
    batch_size: int = 128,
    width: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    bf16: bool | str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None | bool = None,
    log=print,
) -> ReferenceNet:
    """Train (or load from cache) the FD-ref reference CNN for ``dataset`` (uint8 ``.images``, ``.labels``).

    Supervised cross-entropy when labels exist; else 4-way rotation prediction (self-supervised). The budget
    is ``min(epochs * N, max_images)`` images with a ``max_seconds`` safety stop (a net cut short by the
    clock is not cached, so the cached net never depends on machine load). ``cache_dir=False`` disables
    the cache; None uses $SNS_CACHE_DIR or ~/.cache/squeezespan/fdref.
    """
    images = getattr(dataset, "images", None)
    if images is None or images.dtype != torch.uint8 or images.ndim != 4:
        raise SnsError(
            "FD-ref needs an in-memory dataset with uint8 (N, C, H, W) .images; "
            "load it with squeezespan.data.load_dataset"
        )
    n, c, h, w = images.shape
    labels = getattr(dataset, "labels", None)
    supervised = labels is not None and bool((labels >= 0).any())
    bf16 = resolve_bf16(bf16, device, log)  # auto: bf16 where the hardware has it (the cache key records which)
    num_classes = int(labels.max().item()) + 1 if supervised else 4
    settings = dict(
        epochs=epochs,
        max_images=max_images,
        batch_size=batch_size,
        width=width,
        lr=lr,
        seed=seed,
        supervised=supervised,
        bf16=bool(bf16),
    )
    cache_path = None
    if cache_dir is not False:
        cache_path = Path(cache_dir or default_cache_dir()) / (_cache_key(dataset, settings) + ".safetensors")
        if cache_path.exists():
            try:
                return load_reference_net(cache_path, device)
            except SnsError as e:
                log(f"warning: {e}; retraining it")

    gen = torch.Generator().manual_seed(seed)
    targets = labels if supervised else None  # None: rotation prediction
    val_idx, train_idx = _split(targets, n, gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ReferenceNet(c, h, num_classes, width).to(device)
    steps = max(1, min(epochs * train_idx.numel(), max_images) // batch_size)
    t0 = time.time()
    step, cut_short = _fit_reference(
        net, images, targets, train_idx, gen, steps, batch_size, lr, max_seconds, bf16, device, log
    )
    net.eval()
    acc = _accuracy(net, images, labels, val_idx, supervised, device) if val_idx.numel() else float("nan")
    meta = dict(
        dataset=str(getattr(dataset, "name", "data")),
        objective="supervised" if supervised else "rotation",
        val_accuracy=acc,
        steps=step,
        seconds=round(time.time() - t0, 1),
        num_images=n,
        **settings,
    )
    net.meta = meta
    if cache_path is not None and not cut_short:
        save_reference_net(net, cache_path, meta)
    return net


def _split(labels: torch.Tensor | None, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, train) indices of the labelled images (all ``n`` for rotation): 5% held out, at most 2000."""
    keep = (labels >= 0) if labels is not None else torch.ones(n, dtype=torch.bool)
    idx_all = torch.nonzero(keep).flatten()
    perm = idx_all[torch.randperm(idx_all.numel(), generator=gen)]
    n_val = min(2000, max(1, perm.numel() // 20)) if perm.numel() >= 40 else 0
    return perm[:n_val], perm[n_val:]


def _reference_batch(images, labels: torch.Tensor | None, idx, gen: torch.Generator):
    """Float [0, 1] images and targets: the labels, or (no labels) a random rotation and its index 0..3."""
    x = images[idx].float() / 255.0
    if labels is not None:
        y = labels[idx]
    else:
        y = torch.randint(0, 4, (x.shape[0],), generator=gen)
        x = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, y)])
    # Small shifts make the features care about shape rather than exact pixel position.
    return augment_translation(x, 0.0625, 1.0, gen), y


def _fit_reference(
    net, images, labels, train_idx, gen, steps, batch_size, lr, max_seconds, bf16, device, log
) -> tuple[int, bool]:
    """Adam + one-cycle over shuffled epochs of ``train_idx`` for ``steps``: (steps done, cut short by the clock)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0, step = time.time(), 0
    net.train()
    order, pos = torch.randperm(train_idx.numel(), generator=gen), 0
    while step < steps:
        if pos + batch_size > order.numel():
            order, pos = torch.randperm(train_idx.numel(), generator=gen), 0
        x, y = _reference_batch(images, labels, train_idx[order[pos : pos + batch_size]], gen)
        pos += batch_size
        # bf16 autocast trains ~3x faster on CPUs with bf16 units; features are later extracted in fp32.
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if time.time() - t0 > max_seconds and step < steps:
            log(
                f"warning: FD-ref reference net stopped by the {max_seconds:.0f} s budget after {step}/{steps} "
                "steps; it will not be cached"
            )
            return step, True
    return step, False


@torch.no_grad()
def _accuracy(net: ReferenceNet, images, labels, idx, supervised: bool, device) -> float:
    correct = 0
    for i in range(0, idx.numel(), 500):
        b = idx[i : i + 500]
        x = images[b].to(device).float() / 255.0
        if supervised:
            y = labels[b].to(device)
        else:
            k = torch.arange(b.numel()) % 4
            x = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)])
            y = k.to(device)
        correct += int((net(x).argmax(1) == y).sum())
    return correct / max(1, idx.numel())


def real_stats_cached(
    dataset, ref_net: ReferenceNet, max_images: int, cache_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stats of a fixed seeded subset of ``max_images`` real images, so every evaluation compares to the same set."""
    if cache_path is not None and cache_path.exists():
        data = np.load(cache_path)
        return data["mu"], data["sigma"]
    n = dataset.images.shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_images] if n > max_images else slice(None)
    mu, sigma = ref_stats(dataset.images[idx], ref_net)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma)
        atomic_write_bytes(cache_path, buf.getvalue())
    return mu, sigma
