"""The Teacher: a frozen generator that samples images in [0, 1] together with its tapped feature maps (and w)."""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import SnsError, one_line
from ..userimport import import_callable

# The outputs of StyleGAN2's synthesis blocks (b4, b8, ...): the features the paper squeezes.
DEFAULT_TAPS = r".*synthesis\.b(\d+)$"
# Pseudo-tap for the latent w (Table 1's latent-target rows), read from the mapping network's output.
W_TAP = "w"
# what the generator's forward runs in: fp32, or bf16 autocast (images and taps still come back float32)
TEACHER_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
_MAX_LISTED = 60


def _pick_tensor(output: Any, name: str, module: nn.Module | None = None) -> torch.Tensor:
    """A tapped module's feature map; from a tuple, the tensor with most channels.

    A StyleGAN synthesis block returns (x, img): x is its feature map even when narrower than the image.
    """
    if isinstance(output, torch.Tensor):
        return output
    if (
        type(module).__name__ == "SynthesisBlock"
        and isinstance(output, (tuple, list))
        and isinstance(output[0], torch.Tensor)
    ):
        return output[0]
    if isinstance(output, (tuple, list)):
        tensors = [t for t in output if isinstance(t, torch.Tensor) and t.ndim >= 2]
        if tensors:
            # max keeps the first on ties, so a block's feature map wins over an equally wide image
            return max(tensors, key=lambda t: t.shape[1])
    raise SnsError(
        f"teacher tap {name!r}: the module returned {type(output).__name__}, not a tensor or a tuple "
        "holding one; choose another module with --taps"
    )


def _list_names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class Teacher:
    """A frozen generator G (eval mode, no grad) with forward hooks on the modules whose names match `taps`.

    taps: one regex or a list of regexes, each fully matching qualified module names; "w" taps the latent w
      (ws[:, 0] from the module `w_module`). None or [] taps nothing (images only). tap_w=True adds "w".
      Features come in network order, w last. A tapped module returning a tuple gives its widest tensor
      (a synthesis block gives its feature map x).
    output_range: the generator's image range, mapped linearly to [0, 1] and clamped.
    G is called as G(z, c, truncation_psi=..., noise_mode=...) when it has a c_dim attribute (the official
    convention), else as G(z). precision: "fp32" runs G in fp32 (also inside a caller's autocast), "bf16" under
    bf16 autocast. Images and features come back float32, detached.
    compile: run G's forward through torch.compile (the taps are then read by hooks that stay on the tapped
    modules; they capture only inside ``run``). The same function in the same precision, so outputs equal the
    plain forward's to float rounding; it pays on a CPU for a paper-size teacher once the one-time compilation
    (tens of seconds per batch size) is spent (docs/teacher-cost.md). The shape probe runs uncompiled.
    """

    def __init__(
        self,
        generator: nn.Module,
        taps: str | Sequence[str] | None = DEFAULT_TAPS,
        tap_w: bool = False,
        output_range: tuple[float, float] = (-1.0, 1.0),
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        z_dim: int | None = None,
        img_channels: int | None = None,
        w_module: str = "mapping",
        device: str | torch.device | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ):
        if not isinstance(generator, nn.Module):
            raise SnsError(f"teacher: the generator must be a torch.nn.Module, got {type(generator).__name__}")
        self.generator = generator.eval().requires_grad_(False)
        self.z_dim = int(z_dim if z_dim is not None else getattr(generator, "z_dim", 0) or 0)
        if self.z_dim <= 0:
            raise SnsError(f"teacher: {type(generator).__name__} has no z_dim attribute; pass z_dim=<latent size>")
        self.c_dim = getattr(generator, "c_dim", None)
        self.img_channels = img_channels if img_channels is not None else getattr(generator, "img_channels", None)
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise SnsError(f"teacher: output_range must be (low, high) with high > low, got {tuple(output_range)}")
        self.output_range = (lo, hi)
        self.truncation_psi = float(truncation_psi)
        self.truncation_cutoff = truncation_cutoff
        self.noise_mode = noise_mode
        self.w_module = w_module
        if precision not in TEACHER_DTYPES:
            raise SnsError(f"teacher: precision {precision!r} is unknown; use one of {list(TEACHER_DTYPES)}")
        self.precision = precision
        self.compile = bool(compile)
        self._compiled: Any = None  # torch.compile'd call of G, built on the first compiled run
        self._capturing = [False]  # the persistent hooks of the compiled path capture only while this is True
        self._captured: dict[str, torch.Tensor] = {}

        patterns = [taps] if isinstance(taps, str) else list(taps or [])
        self.tap_w = bool(tap_w) or W_TAP in patterns
        self.tap_names = self._resolve_taps([p for p in patterns if p != W_TAP])
        self.feature_names: list[str] = self.tap_names + ([W_TAP] if self.tap_w else [])
        if self.tap_w and w_module not in dict(generator.named_modules()):
            raise SnsError(
                f"teacher: tapping w needs a mapping module named {w_module!r}; modules are "
                f"{_list_names([n for n, _ in generator.named_modules() if n])}; pass w_module=<name>"
            )
        self._shapes: list[tuple[int, ...]] | None = None
        self._image_shape: tuple[int, int, int] | None = None
        if device is not None:
            self.to(device)

    # ---- construction helpers

    def _resolve_taps(self, patterns: Sequence[str]) -> list[str]:
        names = [n for n, _ in self.generator.named_modules() if n]
        chosen: list[str] = []
        for pattern in patterns:
            try:
                regex = re.compile(pattern)
            except re.error as e:
                raise SnsError(f"teacher: taps regex {pattern!r} does not compile ({e}); fix the pattern") from None
            hits = [n for n in names if regex.fullmatch(n)]
            if not hits:
                raise SnsError(
                    f"teacher: taps regex {pattern!r} matches no module of {type(self.generator).__name__}"
                    f"; modules are {_list_names(names)}"
                )
            chosen += [n for n in hits if n not in chosen]
        order = {n: i for i, n in enumerate(names)}
        return sorted(chosen, key=order.__getitem__)  # network order: shallow to deep

    @classmethod
    def from_factory(
        cls,
        spec: str,
        weights: str | Path | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        **teacher_kwargs: Any,
    ) -> Teacher:
        """Bring your own generator: "package.module:factory" is called with factory_kwargs and must return an
        nn.Module; `weights` (.safetensors or a torch state_dict file) are loaded strictly into it."""
        factory = import_callable(spec, f"teacher factory {spec!r}")
        try:
            generator = factory(**(factory_kwargs or {}))
        except SnsError:
            raise
        except Exception as e:  # the user's factory failing: its message, in one line
            raise SnsError(f"teacher factory {spec!r} raised {one_line(e)}") from None
        if not isinstance(generator, nn.Module):
            raise SnsError(f"teacher factory {spec!r} returned {type(generator).__name__}, expected a torch.nn.Module")
        if weights is not None:
            load_weights(generator, weights)
        return cls(generator, **teacher_kwargs)

    # ---- placement

    @property
    def device(self) -> torch.device:
        first = next(itertools.chain(self.generator.parameters(), self.generator.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Teacher:
        self.generator.to(device)
        return self

    # ---- sampling

    def _rng(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
        if seed is not None and generator is not None:
            raise SnsError("teacher.sample: pass seed or generator, not both")
        return torch.Generator().manual_seed(int(seed)) if seed is not None else generator

    def draw_z(self, n: int, seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I) drawn on the RNG's device (CPU for a seed, so any device gets the same z), then moved."""
        rng = self._rng(seed, generator)
        z = torch.randn(int(n), self.z_dim, generator=rng, device=rng.device if rng is not None else "cpu")
        return z.to(self.device)

    def draw_c(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Labels for the generator: None (no c argument), (n, 0) if unconditional, else random one-hot classes."""
        if self.c_dim is None:
            return None
        if not self.c_dim:
            return torch.zeros(int(n), 0, device=self.device)
        labels = torch.randint(
            int(self.c_dim), (int(n),), generator=generator, device=generator.device if generator is not None else "cpu"
        )
        return torch.nn.functional.one_hot(labels, int(self.c_dim)).float().to(self.device)

    def sample(
        self,
        n: int,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """n synthetic images (N, C, H, W) float32 in [0, 1] and the tapped features (float32, one per tap).

        Deterministic for a given seed or generator state (with noise_mode "const"); without either, z (and c
        for conditional teachers) come from the global torch RNG.
        """
        rng = self._rng(seed, generator)
        z = self.draw_z(n, generator=rng)
        return self.run(z, self.draw_c(n, rng))

    @torch.no_grad()
    def run(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Images in [0, 1] and tapped features for given latents z (and labels c for conditional teachers)."""
        return self._run(z, c, self.compile)

    @torch.no_grad()
    def _run(self, z: torch.Tensor, c: torch.Tensor | None, compiled: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.generator.training:  # someone switched it back; the teacher always samples in eval mode
            self.generator.eval()
        if compiled:
            out, captured = self._run_compiled(z.to(self.device), c)
        else:
            out, captured = self._run_plain(z.to(self.device), c)
        images = self._to_unit_range(out)
        missing = [name for name in self.feature_names if name not in captured]
        if missing:
            raise SnsError(
                f"teacher: tapped modules {missing} did not run in the generator's forward pass; "
                "choose modules that are called"
            )
        features = [captured[name].detach().float() for name in self.feature_names]
        bad = [name for name, f in zip(self.feature_names, features) if not torch.isfinite(f).all()]
        if bad:
            raise SnsError(f"teacher: tapped features {bad} hold NaN or infinite values (damaged or diverged weights)")
        return images, features

    def _autocast(self):
        dtype = TEACHER_DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def _run_plain(self, z: torch.Tensor, c: torch.Tensor | None) -> tuple[Any, dict[str, torch.Tensor]]:
        """G's forward with hooks on the tapped modules for this call only."""
        modules = dict(self.generator.named_modules())
        captured: dict[str, torch.Tensor] = {}

        def hook_for(name: str):
            def hook(module, _inputs, output):
                captured[name] = _pick_tensor(output, name, module)

            return hook

        def w_hook(_module, _inputs, output):
            ws = _pick_tensor(output, self.w_module)
            captured[W_TAP] = ws[:, 0] if ws.ndim == 3 else ws

        handles = [modules[name].register_forward_hook(hook_for(name)) for name in self.tap_names]
        if self.tap_w:
            handles.append(modules[self.w_module].register_forward_hook(w_hook))
        try:
            with self._autocast():
                out = self._call_generator(z, c)
        finally:
            for h in handles:
                h.remove()
        return out, captured

    def _run_compiled(self, z: torch.Tensor, c: torch.Tensor | None) -> tuple[Any, dict[str, torch.Tensor]]:
        """G's forward through torch.compile. Hooks added and removed around every call would make torch.compile
        recompile each time, so the compiled path keeps its hooks on the tapped modules; they capture only while
        ``_capturing`` is set (a caller running G itself, e.g. to differentiate through it, leaves nothing behind).
        """
        if self._compiled is None:
            self._compiled = self._build_compiled()
        if self.c_dim is not None and c is None:
            c = torch.zeros(z.shape[0], int(self.c_dim), device=z.device)
        self._captured.clear()
        self._capturing[0] = True
        try:
            with self._autocast():
                out = self._compiled(z, c)
        except SnsError:
            raise
        except Exception as e:  # the compiler failing on this generator: one line and the way out
            raise SnsError(
                f"teacher: torch.compile of {type(self.generator).__name__} failed ({one_line(e)}); "
                "sample without compiling (teacher_compile=false)"
            ) from None
        finally:
            self._capturing[0] = False
        captured = dict(self._captured)
        self._captured.clear()
        return out, captured

    def _build_compiled(self) -> Any:
        G, captured, capturing = self.generator, self._captured, self._capturing
        modules = dict(G.named_modules())

        def hook_for(name: str):
            def hook(module, _inputs, output):
                if capturing[0]:
                    captured[name] = _pick_tensor(output, name, module)

            return hook

        def w_hook(_module, _inputs, output):
            if capturing[0]:
                ws = _pick_tensor(output, self.w_module)
                captured[W_TAP] = ws[:, 0] if ws.ndim == 3 else ws

        for name in self.tap_names:
            modules[name].register_forward_hook(hook_for(name))
        if self.tap_w:
            modules[self.w_module].register_forward_hook(w_hook)
        kwargs = self._generator_kwargs()  # read once: signature inspection is not for the compiler

        def call(z: torch.Tensor, c: torch.Tensor | None) -> Any:
            return G(z) if c is None else G(z, c, **kwargs)

        return torch.compile(call)

    def _generator_kwargs(self) -> dict[str, Any]:
        """The sampling keyword arguments G's forward accepts (official convention: G has c_dim)."""
        kwargs: dict[str, Any] = {}
        forward = getattr(self.generator, "forward", self.generator)
        for key, value in [
            ("truncation_psi", self.truncation_psi),
            ("truncation_cutoff", self.truncation_cutoff),
            ("noise_mode", self.noise_mode),
        ]:
            if _accepts(forward, key):
                kwargs[key] = value
        return kwargs

    def _call_generator(self, z: torch.Tensor, c: torch.Tensor | None) -> Any:
        G = self.generator
        if self.c_dim is None:
            return G(z)
        if c is None:
            c = torch.zeros(z.shape[0], int(self.c_dim), device=z.device)
        return G(z, c, **self._generator_kwargs())

    def _to_unit_range(self, out: Any) -> torch.Tensor:
        name = type(self.generator).__name__
        if not isinstance(out, torch.Tensor):
            raise SnsError(f"teacher: {name} returned {type(out).__name__}, expected an image tensor (N, C, H, W)")
        if out.ndim != 4:
            raise SnsError(f"teacher: {name} returned shape {tuple(out.shape)}, expected images (N, C, H, W)")
        expected = (self.img_channels,) if self.img_channels else (1, 3)
        if out.shape[1] not in expected:
            raise SnsError(
                f"teacher: {name} returned {out.shape[1]} channels, expected "
                f"{' or '.join(map(str, expected))}; is it an image generator? (set img_channels)"
            )
        if not torch.isfinite(out).all():  # clamp would keep NaN; the student's loss would blame its own lr
            raise SnsError(
                f"teacher: {name} produced NaN or infinite images (damaged or diverged weights); "
                "use another snapshot or checkpoint of the generator"
            )
        lo, hi = self.output_range
        return ((out.float() - lo) / (hi - lo)).clamp_(0, 1)

    # ---- shapes

    def _probe(self) -> None:
        g = torch.Generator().manual_seed(0)
        z = self.draw_z(2, generator=g)
        images, features = self._run(z, self.draw_c(2, g), compiled=False)  # a 2-image compile would be wasted
        self._image_shape = tuple(images.shape[1:])  # type: ignore[assignment]
        self._shapes = [tuple(f.shape[1:]) for f in features]

    @property
    def feature_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shape of each tapped feature, e.g. [(C4, 4, 4), (C8, 8, 8), ..., (w_dim,)]."""
        if self._shapes is None:
            self._probe()
        return list(self._shapes)  # type: ignore[arg-type]

    @property
    def feature_channels(self) -> list[int]:
        """Channels (dim 1) of each tapped feature: what the squeeze module's laterals take in."""
        return [s[0] for s in self.feature_shapes]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the sampled images."""
        if self._image_shape is None:
            self._probe()
        return self._image_shape  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Teacher({type(self.generator).__name__}, z_dim={self.z_dim}, taps={self.feature_names}, "
            f"noise_mode={self.noise_mode!r}, truncation_psi={self.truncation_psi}, precision={self.precision!r}"
            f"{', compile=True' if self.compile else ''})"
        )


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a .safetensors file or a torch state_dict (weights_only=True) strictly into `module`."""
    path = Path(path)
    if not path.is_file():
        raise SnsError(f"teacher weights {str(path)!r}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable or unsafe content: say which file and why
        raise SnsError(
            f"teacher weights {str(path)!r}: cannot read ({type(e).__name__}: {str(e)[:200]}); "
            "expected .safetensors or a torch state_dict saved with torch.save"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SnsError(f"teacher weights {str(path)!r}: expected a dict of tensors (a state_dict)")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise SnsError(
            f"teacher weights {str(path)!r} do not fit {type(module).__name__}: {str(e).splitlines()[-1].strip()[:300]}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise SnsError(
            f"teacher weights {str(path)!r} do not fit {type(module).__name__}: missing "
            f"{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}"
        )
    return module
