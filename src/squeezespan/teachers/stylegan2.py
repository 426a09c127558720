"""Our StyleGAN2 generator and discriminator in plain PyTorch, named so NVIDIA's StyleGAN2-ADA weights load as-is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SnsError

# Why these names and kwargs: the official pickles store constructor kwargs plus tensors under these exact
# qualified names (training/networks.py of NVlabs/stylegan2-ada-pytorch). Keeping both identical lets
# teachers.pickle_import rebuild a network from the kwargs and load_state_dict(strict=True) its tensors.
# fp16 options (num_fp16_res, use_fp16, channels_last) are accepted for that reason and ignored: we run fp32.

DEFAULT_FILTER = (1, 3, 3, 1)
NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")

# ----------------------------------------------------------------------------------------------------------
# Resampling and activation primitives (plain torch; no custom CUDA ops).


def make_resample_filter(taps: Sequence[float] | None = DEFAULT_FILTER) -> torch.Tensor:
    """FIR low-pass filter normalised to unit DC gain: outer product of `taps` (2D) unless there are >= 8 taps."""
    f = torch.as_tensor(1.0 if taps is None else taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _pads(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) from an int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1D (separable) or 2D filter."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Zero-stuff by `up`, pad (negative = crop), convolve each channel with `f`, keep every `down`-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        stuffed = x.new_zeros(n, c, h * up, w * up)
        stuffed[:, :, ::up, ::up] = x
        x = stuffed
    left, right, top, bottom = _pads(padding)
    x = F.pad(x, [left, right, top, bottom])
    if f is None:
        return x[:, :, ::down, ::down] * gain if gain != 1 else x[:, :, ::down, ::down]
    # A true convolution flips the kernel; conv2d correlates, hence the flip.
    f = (f * gain ** (f.ndim / 2)).to(device=x.device, dtype=x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 2:
        kernel = f[None, None].expand(c, 1, *f.shape).contiguous()
        return F.conv2d(x, kernel, stride=down, groups=c)
    x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1).contiguous(), stride=(1, down), groups=c)
    return F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1).contiguous(), stride=(down, 1), groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with filter `f`; output is exactly `up` times larger and keeps the signal's magnitude."""
    fw, fh = _filter_size(f)
    pad = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Low-pass filter then keep every `down`-th pixel; output is exactly `down` times smaller."""
    fw, fh = _filter_size(f)
    pad = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pad)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Convolution with `w` fused with FIR up- or downsampling by `f`; `padding` is w.r.t. the upsampled input.

    flip_weight=True correlates (like F.conv2d); False convolves. Equal to: zero-stuff, pad, filter, conv, decimate.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down at once is not supported")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    left, right, top, bottom = _pads(padding)
    if up > 1:
        left, right = left + (fw + up - 1) // 2, right + (fw - up) // 2
        top, bottom = top + (fh + up - 1) // 2, bottom + (fh - up) // 2
    if down > 1:
        left, right = left + (fw - down + 1) // 2, right + (fw - down) // 2
        top, bottom = top + (fh - down + 1) // 2, bottom + (fh - down) // 2

    if up > 1:
        # A strided transposed conv is a full convolution of the zero-stuffed input: it already padded by
        # (k - 1) on both sides and lacks the (up - 1) trailing zeros, so the filter step pads the rest.
        if flip_weight:
            w = w.flip([2, 3])
        wt = (
            w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            .transpose(1, 2)
            .reshape(groups * in_per_group, out_channels // groups, kh, kw)
        )
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        pad = [left - (kw - 1), right - (kw - up), top - (kh - 1), bottom - (kh - up)]
        return upfirdn2d(x, f, padding=pad, gain=up * up)

    if not flip_weight:
        w = w.flip([2, 3])
    if down > 1:
        x = upfirdn2d(x, f, padding=[left, right, top, bottom])
        return F.conv2d(x, w, stride=down, groups=groups)
    if left == right and top == bottom and left >= 0 and top >= 0:
        return F.conv2d(x, w, padding=(top, left), groups=groups)
    return F.conv2d(F.pad(x, [left, right, top, bottom]), w, groups=groups)


# name -> (function(x, alpha), default alpha, default gain); the gains keep activations' variance near 1.
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float, float]] = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def _activation(name: str) -> tuple[Callable[[torch.Tensor, float], torch.Tensor], float, float]:
    if name not in ACTIVATIONS:
        raise SnsError(f"stylegan2: activation {name!r} is unknown; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add bias along `dim`, apply activation, scale by gain (default: the activation's), clamp to +-clamp."""
    fn, default_alpha, default_gain = _activation(act)
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        x = x + b.reshape(shape)
    x = fn(x, float(default_alpha if alpha is None else alpha))
    gain = float(default_gain if gain is None else gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2 conv: scale input channels by per-sample styles, convolve, then renormalise each output channel.

    fused_modconv=True builds one weight per sample (grouped conv); False scales activations before and after
    a shared conv (an ordinary batched conv). Both give the same result; which is faster depends on the device
    (``grouped_modconv_is_faster``).
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    per_sample_w = dcoefs = None
    if fused_modconv or (demodulate and torch.is_grad_enabled()):
        # NVIDIA's order: per-sample weights (N, O, I, k, k), the demodulation differentiated through them
        per_sample_w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
        if demodulate:
            dcoefs = (per_sample_w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    elif demodulate:
        # sampling: the same sums as sum_i s_i^2 * sum_k w_oik^2, a (N, I) x (I, O) matmul instead of a
        # (N, O, I, k, k) tensor (600 MB for 64 images of a 512-channel 3x3 layer)
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(
            x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
        )
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if demodulate:
        per_sample_w = per_sample_w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    per_sample_w = per_sample_w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(
        x,
        per_sample_w.to(x.dtype),
        f=resample_filter,
        up=up,
        down=down,
        padding=padding,
        groups=batch,
        flip_weight=flip_weight,
    )
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


def grouped_modconv_is_faster(device: torch.device) -> bool:
    """Does sampling (no grad) run the modulated conv faster grouped (one group per image) than batched here?

    CPU (and any device but CUDA): no. The batched form (x * styles -> one conv2d with the shared weight -> *
    dcoefs) is an ordinary convolution, while the grouped one runs N small convs and first builds an
    (N, O, I, k, k) weight. Measured on the 2-core AVX-512 BF16 CPU (torch 2.14, 'cifar' config: 512 channels,
    32 px; img/s, median of 5 interleaved runs on a machine busy with other jobs, docs/teacher-cost.md):
      threads, batch:  fp32 grouped -> batched   bf16 autocast grouped -> batched
      2, 16:           0.87 -> 1.67              0.99 -> 3.30
      2, 64:           0.67 -> 1.49              0.70 -> 1.99
      1, 16:           0.41 -> 1.13              0.51 -> 2.20
    CUDA: NVIDIA's rule, not measured here: grouped in fp32, batched under reduced-precision autocast.
    """
    if device.type != "cuda":
        return False
    return not torch.is_autocast_enabled()  # no argument: the CUDA autocast state (torch >= 2.2)


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise SnsError(f"stylegan2: noise_mode {noise_mode!r} is unknown; use one of {list(NOISE_MODES)}")


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise SnsError(f"stylegan2: architecture {architecture!r} is unknown; use one of {list(ARCHITECTURES)}")


# ----------------------------------------------------------------------------------------------------------
# Layers. Weights are stored N(0, 1) and scaled at run time ("equalized learning rate").


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate: weight * lr_multiplier / sqrt(in_features) at run time."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float = 0,
    ):
        super().__init__()
        _activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        if bias:
            self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Conv with equalized learning rate, optional FIR up/downsampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _activation(activation)[2]
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None
        else:  # frozen layers (Freeze-D) keep the same state_dict keys as buffers
            self.register_buffer("weight", weight)
            if bias_value is not None:
                self.register_buffer("bias", bias_value)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding, flip_weight=(self.up == 1)
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """z (and label c) -> w through an MLP; tracks the average w used for truncation."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(
                self,
                f"fc{idx}",
                FullyConnectedLayer(
                    features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
                ),
            )
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise SnsError(
                    f"stylegan2 mapping: z must be (N, {self.z_dim}), got {None if z is None else tuple(z.shape)}"
                )
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise SnsError(
                    f"stylegan2 mapping: c must be (N, {self.c_dim}) labels (one-hot), got "
                    f"{None if c is None else tuple(c.shape)}"
                )
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None or not hasattr(self, "w_avg"):
                raise SnsError("stylegan2 mapping: truncation_psi != 1 needs a tracked w_avg (w_avg_beta set)")
            # Truncation pulls w towards the average: fidelity for diversity.
            x = x.to(self.w_avg.dtype)
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + per-pixel noise + bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = _activation(activation)[2]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1
    ) -> torch.Tensor:
        _check_noise_mode(noise_mode)
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
            )
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


class SynthesisBlock(nn.Module):
    """One resolution of the generator: (const | upsampling conv0) -> conv1 -> torgb; returns (features, img)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default: bool | str = "inference_only",
        **layer_kwargs: Any,
    ):
        super().__init__()
        _check_architecture(architecture)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16  # recorded for the official kwargs; we always compute in fp32
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        update_emas: bool = False,
        **layer_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == "inference_only":
            # training differentiates through NVIDIA's per-sample weights; a frozen teacher samples in the form
            # that is faster on its device
            fused_modconv = not self.training and (torch.is_grad_enabled() or grouped_modconv_is_faster(ws.device))

        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == "resnet":
            # sqrt(0.5) on both branches keeps the sum's variance equal to each branch's.
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


def _channels_per_resolution(resolutions: Sequence[int], channel_base: int, channel_max: int) -> dict[int, int]:
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _check_resolution(img_resolution: int, who: str) -> int:
    if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise SnsError(f"stylegan2 {who}: img_resolution must be a power of two >= 4, got {img_resolution!r}")
    return int(math.log2(img_resolution))


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> image (N, img_channels, R, R) in about [-1, 1], through blocks b4, b8, ..., bR."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 2048,
        channel_max: int = 128,
        num_fp16_res: int = 0,
        **block_kwargs: Any,
    ):
        super().__init__()
        log2 = _check_resolution(img_resolution, "synthesis")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res  # accepted for official kwargs, never used
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = _channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, **block_kwargs: Any) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise SnsError(f"stylegan2 synthesis: ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # A block's torgb shares its w with the next block's first conv.
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}"
        )


class Generator(nn.Module):
    """StyleGAN2 generator: G(z, c) -> image in about [-1, 1]; G.mapping(z, c) -> ws; G.synthesis(ws) -> image.

    Constructor kwargs are the official ones; synthesis kwargs may come as a dict (StyleGAN2-ADA pickles)
    or as extra keyword arguments (StyleGAN3's copy of StyleGAN2).
    """

    def __init__(
        self,
        z_dim: int = 128,
        c_dim: int = 0,
        w_dim: int = 128,
        img_resolution: int = 32,
        img_channels: int = 3,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
        **more_synthesis_kwargs: Any,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        synthesis_kwargs = {**(synthesis_kwargs or {}), **more_synthesis_kwargs}
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# ----------------------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: (fromrgb) -> conv0 -> downsampling conv1 (+ resnet skip)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        super().__init__()
        _check_architecture(architecture)
        if in_channels not in (0, tmp_channels):
            raise SnsError(f"stylegan2 discriminator block: in_channels must be 0 or {tmp_channels}, got {in_channels}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16  # recorded for the official kwargs; we always compute in fp32
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:  # Freeze-D freezes the first `freeze_layers` layers of D
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels,
                tmp_channels,
                kernel_size=1,
                activation=activation,
                trainable=trainable(),
                conv_clamp=conv_clamp,
            )
        self.conv0 = Conv2dLayer(
            tmp_channels,
            tmp_channels,
            kernel_size=3,
            activation=activation,
            trainable=trainable(),
            conv_clamp=conv_clamp,
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            trainable=trainable(),
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                trainable=trainable(),
                resample_filter=resample_filter,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(torch.float32))
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class MinibatchStdLayer(nn.Module):
    """Appends the std-dev across groups of `group_size` samples as extra channels (fights mode collapse).

    Sample i belongs to group i % (N // G), as in the official code.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise SnsError(
                f"stylegan2 discriminator: batch size {n} must be divisible by mbstd_group_size {g}; "
                "change the batch size or epilogue_kwargs.mbstd_group_size"
            )
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch-std, conv, fc, out (projection onto the mapped label when conditional)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        _check_architecture(architecture)
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None, force_fp32: bool = False
    ) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class Discriminator(nn.Module):
    """StyleGAN2 discriminator: D(img in [-1, 1], c) -> logits (N, 1); blocks bR, ..., b8, epilogue b4."""

    def __init__(
        self,
        c_dim: int = 0,
        img_resolution: int = 32,
        img_channels: int = 3,
        architecture: str = "resnet",
        channel_base: int = 2048,
        channel_max: int = 128,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict[str, Any] | None = None,
        mapping_kwargs: dict[str, Any] | None = None,
        epilogue_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        log2 = _check_resolution(img_resolution, "discriminator")
        _check_architecture(architecture)
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res  # accepted for official kwargs, never used
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = _channels_per_resolution(self.block_resolutions + [4], channel_base, channel_max)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=layer_idx,
                **(block_kwargs or {}),
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **(mapping_kwargs or {})
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}), **common
        )

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None = None, update_emas: bool = False, **block_kwargs: Any
    ) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise SnsError(
                f"stylegan2 discriminator: images must be (N, {self.img_channels}, {self.img_resolution}, "
                f"{self.img_resolution}), got {tuple(img.shape)}"
            )
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


def build_stylegan2(
    resolution: int = 32,
    img_channels: int = 3,
    channel_base: int = 2048,
    channel_max: int = 128,
    z_dim: int = 128,
    w_dim: int = 128,
    mapping_layers: int = 2,
    c_dim: int = 0,
    mbstd_group_size: int = 4,
    conv_clamp: float | None = None,
    g_architecture: str = "skip",
    d_architecture: str = "resnet",
) -> tuple[Generator, Discriminator]:
    """A matching (G, D) pair with official-style kwargs; small defaults fit a CPU."""
    G = Generator(
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=resolution,
        img_channels=img_channels,
        mapping_kwargs=dict(num_layers=mapping_layers),
        synthesis_kwargs=dict(
            channel_base=channel_base, channel_max=channel_max, conv_clamp=conv_clamp, architecture=g_architecture
        ),
    )
    D = Discriminator(
        c_dim=c_dim,
        img_resolution=resolution,
        img_channels=img_channels,
        architecture=d_architecture,
        channel_base=channel_base,
        channel_max=channel_max,
        conv_clamp=conv_clamp,
        epilogue_kwargs=dict(mbstd_group_size=mbstd_group_size),
    )
    return G, D
