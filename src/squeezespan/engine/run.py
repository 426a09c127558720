"""The run object shared by every training loop (pretrain and train-gan): one run directory's checkpoints,
resume, per-rank RNG states, config.yaml and the SIGINT/SIGTERM stop flag.

A loop uses it like this::

    run = RunDir(run_dir, world, keep=cfg["keep_ckpts"], log=log)
    run.prepare()                                    # checkpoints/ exists, half-written files are gone
    found = run.load_latest() if resume else None    # every rank gets rank 0's newest good checkpoint
    if found is not None:
        state, path = found
        model.load_state_dict(state["model"])
        run.restore_rng(state, reseed=seed + step)   # exact, or reseeded with a warning
    run.write_config(cfg)                            # the resolved config that runs
    with StopSignal() as stop:
        for step in ...:
            ...
            run.save(step, {"model": model.state_dict()})  # collective: every rank calls it

Only rank 0 touches the disk; the other ranks take part in the collectives (gathering their RNG states,
receiving the checkpoint), so no shared file system is needed.

A run directory belongs to one run at a time: ``prepare_run_dir`` (every `sns` command that writes a run
directory, rank 0 only under torchrun) takes its lock, ``<out>/.lock`` (``RunLock``: an exclusive ``flock`` on a
file holding the holder's pid, host and start time), and keeps it until the command ends. A second run or
resume into the same directory is refused with one line naming the holder. The kernel drops the lock of a
process that dies however it dies (kill -9 included), so the file such a process leaves behind is recognised
as stale and taken over with a message. ``--force`` moves the previous run's files aside into
``<out>/.replaced-<UTC time>/`` (nothing is deleted) once the lock is taken, before the new run writes anything,
so a later ``--resume`` can only find the new run's checkpoints. The move becomes final at the new run's first
write (``RunDir.prepare`` or ``save_config``); a command that fails before it (bad data, teacher, device) puts
the old files back when it releases the lock, and the command checks its config before it calls
``prepare_run_dir`` at all, so refused input leaves the directory as it was.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import SnsError
from ..files import atomic_write_bytes
from .checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from .distributed import World

__all__ = [
    "LOCK_NAME",
    "REPLACED_PREFIX",
    "RunDir",
    "RunLock",
    "StopSignal",
    "config_diff",
    "describe_diff",
    "prepare_run_dir",
    "rank_rng_state",
    "release_run_dirs",
    "save_config",
    "set_rank_rng_state",
    "state_fits",
    "tensors_sha256",
]

LOCK_NAME = ".lock"  # the run directory's lock file (JSON: pid, host, started, command)
REPLACED_PREFIX = ".replaced-"  # --force moves the previous run's files into <out>/.replaced-<UTC time>/


def _holder_text(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it has not written its details yet)"
    text = f"pid {holder['pid']} on {holder.get('host', '?')}"
    return text + (f", started {holder['started']}" if holder.get("started") else "")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a number we cannot check): assume it runs
    return True


_HELD: dict[str, RunLock] = {}  # run directory (real path) -> the lock this process holds on it


def _key(path: Path) -> str:
    return os.path.realpath(path)


class RunLock:
    """The exclusive lock of a run directory: ``<dir>/.lock`` under ``flock(LOCK_EX)``, with the holder's details.

    The kernel releases a ``flock`` when its process ends, however it ends, so a lock file whose lock can be
    taken was left by a dead process, on this host or another one sharing the file system (a node that died
    before a Slurm resubmission): it is taken over with a message. On a file system without ``flock`` the
    holder's pid is checked instead, and a lock file naming another host is refused (this host cannot tell
    whether that run still goes; the message says to delete the file if it does not).

    Args:
        run_dir: the run directory (must exist).
        log: where the takeover message goes.
    """

    def __init__(self, run_dir: str | os.PathLike, log: Callable[[str], Any] = print):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.log = log
        self.fd: int | None = None
        self.created_dir = False  # prepare_run_dir made the directory: removed again on release if still empty
        self.replaced: Path | None = None  # --force: where the previous run's files went
        self.committed = False  # the new run wrote into the directory (the --force move is final)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise a one-line SnsError naming its holder."""
        if self.fd is not None:
            return self
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise SnsError(f"--out {self.dir} is not writable: {e.strerror} ({self.path})") from None
            try:
                self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                current = False
            if current:
                break
            os.close(fd)  # the holder released (deleted) the file between our open and our lock: try the new one
        else:
            raise SnsError(f"--out {self.dir}: could not take {self.path} (it keeps being replaced)")
        holder = _read_holder(fd)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:500],
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise SnsError(f"--out {self.dir} is not writable: {e.strerror} ({self.path})") from None
        self.fd = fd
        _HELD[_key(self.dir)] = self
        _register_exit_release()
        if holder.get("pid"):
            self.log(f"{self.dir}: taking over the stale lock of {_holder_text(holder)} (that process has ended)")
        return self

    def _lock(self, fd: int) -> None:
        """flock ``fd``; when the lock is taken (or cannot be taken here) decide from the holder in the file."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise SnsError(
                f"--out {self.dir} is in use by another run ({_holder_text(_read_holder(fd))}); "
                "wait for it to end or choose another --out"
            ) from None
        except OSError:  # no flock on this file system: the holder's pid decides
            locked = False
        holder = _read_holder(fd)
        if not holder.get("pid"):
            return
        # flock taken: the holder has ended, on this host or (shared file systems lock across hosts) another one,
        # e.g. a node that died before a Slurm resubmission. Without flock only this host's pids can be checked.
        if not locked and holder.get("host") != socket.gethostname():
            raise SnsError(
                f"--out {self.dir} is locked by {_holder_text(holder)}, which this host cannot check; "
                f"if that run has ended, delete {self.path}"
            )
        if not locked and holder["pid"] != os.getpid() and _pid_alive(int(holder["pid"])):
            raise SnsError(
                f"--out {self.dir} is in use by another run ({_holder_text(holder)}); "
                "wait for it to end or choose another --out"
            )

    def release(self) -> None:
        """Delete the lock file and drop the lock (safe to call twice); an empty directory it created goes too."""
        if self.fd is None:
            return
        if self.replaced is not None and not self.committed:
            self._put_back()
        fd, self.fd = self.fd, None
        _HELD.pop(_key(self.dir), None)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)
        if self.created_dir:
            try:
                self.dir.rmdir()  # only when nothing was written: a refused run leaves no trace
            except OSError:
                pass

    def _put_back(self) -> None:
        """Undo the --force move of a command that failed before its first write (names now taken stay aside)."""
        replaced, self.replaced = self.replaced, None
        for p in sorted(replaced.iterdir()):
            target = self.dir / p.name
            if not os.path.lexists(target):
                try:
                    os.rename(p, target)
                except OSError:
                    pass
        try:
            replaced.rmdir()
        except OSError:
            pass

    def commit(self) -> None:
        """The run writes its first file: a --force move is final (reported once)."""
        if self.committed:
            return
        self.committed = True
        if self.replaced is not None:
            names = sorted(p.name for p in self.replaced.iterdir())
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            self.log(
                f"--force: the previous run's files ({shown}) are in {self.replaced}; delete that folder to free "
                "its space"
            )

    def move_aside(self) -> Path | None:
        """Move every file of the directory except the lock and earlier ``.replaced-*`` folders into a new
        ``.replaced-<UTC time>/`` folder; returns it (None when there was nothing to move)."""
        entries = _run_entries(self.dir)
        if not entries:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest, n = self.dir / f"{REPLACED_PREFIX}{stamp}", 1
        while dest.exists():
            n += 1
            dest = self.dir / f"{REPLACED_PREFIX}{stamp}-{n}"
        dest.mkdir()
        self.replaced = dest
        for p in entries:
            os.rename(p, dest / p.name)
        return dest

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _run_entries(path: Path) -> list[Path]:
    """What a run directory holds, apart from its lock and the folders of runs replaced with --force."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name != LOCK_NAME and not p.name.startswith(REPLACED_PREFIX))


_PREPARED: list[RunLock] = []  # the locks prepare_run_dir took (released by release_run_dirs)


def release_run_dirs() -> None:
    """Release the locks ``prepare_run_dir`` took (the end of a command); at exit every held lock goes.

    A --force command that ends before its first write puts the previous run's files back (``RunLock``)."""
    while _PREPARED:
        _PREPARED.pop().release()


def _release_all() -> None:
    release_run_dirs()
    for lock in list(_HELD.values()):
        lock.release()


_exit_hook = []


def _first_write(run_dir: str | os.PathLike) -> None:
    """Before the first file of a run goes into ``run_dir``: the lock this process holds on it commits."""
    lock = _HELD.get(_key(Path(run_dir)))
    if lock is not None:
        lock.commit()


def _register_exit_release() -> None:
    if not _exit_hook:
        atexit.register(_release_all)
        _exit_hook.append(True)


def prepare_run_dir(
    out: str | os.PathLike, resume: bool = False, force: bool = False, log: Callable[[str], Any] = print
) -> Path:
    """Create ``out`` and take its lock (``RunLock``, held until ``release_run_dirs`` or exit).

    A non-empty directory is refused unless resuming (continue that run) or forcing (start over: the previous
    run's files are moved into ``.replaced-<UTC time>/`` now, before anything new is written; the caller checks its
    config first).

    Raises:
        SnsError: ``out`` is a file, not writable, locked by a running run, non-empty without --resume/--force,
            empty with --resume, or both flags were given.
    """
    path = Path(out)
    if resume and force:
        raise SnsError("--resume continues the run in --out and --force starts over in it: pass only one of them")
    if path.exists() and not path.is_dir():
        raise SnsError(f"--out {path} exists and is not a directory")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnsError(f"--out {path} is not writable: {e.strerror}") from None
    lock = RunLock(path, log)
    lock.created_dir = created
    lock.acquire()
    _PREPARED.append(lock)
    try:
        entries = _run_entries(path)
        if entries and not (resume or force):
            raise SnsError(
                f"--out {path} is not empty; pass --resume to continue that run or --force to start over in it"
            )
        if resume and not entries:
            raise SnsError(f"--resume given but --out {path} holds no run to resume")
        if force:
            lock.move_aside()
    except BaseException:
        _PREPARED.remove(lock)
        lock.release()
        raise
    return path


def save_config(run_dir: str | os.PathLike, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write ``cfg`` atomically as YAML into ``run_dir/name`` (keys in the config's order)."""
    _first_write(run_dir)
    p = Path(run_dir) / name
    atomic_write_bytes(p, yaml.safe_dump(cfg, sort_keys=False).encode())
    return p


def rank_rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every RNG this process draws from: torch's CPU generator, Python's, and ``device``'s CUDA generator.

    Args:
        device: the process's training device; its CUDA generator is saved when it is a GPU.

    Returns:
        A dict of plain tensors and tuples (``torch.load(weights_only=True)`` can read it back).
    """
    device = torch.device(device)
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rank_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore what ``rank_rng_state`` saved (also reads the older formats of pretrain and train-gan checkpoints).

    Args:
        state: one rank's RNG state.
        device: the process's training device; its CUDA generator is restored when the state has one.
    """
    if "rng" in state:  # train-gan's older per-rank entry: {"rng": {...}, "cuda_rng": tensor | None}
        state = {**state["rng"], "cuda": state.get("cuda_rng")}
    device = torch.device(device)
    torch.set_rng_state(state["torch"])
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):  # older pretrain checkpoints saved every visible GPU's state
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda, device)


class StopSignal:
    """SIGINT/SIGTERM set ``requested`` (the signal's name); the loop checkpoints and exits at the end of the step.

    A second signal raises KeyboardInterrupt at once. Outside the main thread no handler can be installed and
    ``requested`` stays None. Use as a context manager: the previous handlers come back on exit.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class RunDir:
    """A run directory as the training loops see it: ``checkpoints/ckpt-<step>.pt``, ``config.yaml``, resume.

    A checkpoint is the loop's payload (any dict of tensors, numbers, strings, nested dicts/lists) plus
    ``step``, ``world_size``, ``rng`` (rank 0's RNG state), with several processes ``rng_ranks`` (every
    rank's, in rank order), and the run's ``identity`` (its resolved config: what it trains) when given.
    Writes are atomic and checksummed (engine.checkpoint), and only the newest
    ``keep`` checkpoints stay.

    Args:
        path: the run directory (created by ``prepare`` on rank 0 if missing).
        world: this process's place in the run (``World()`` for a single process).
        keep: checkpoints kept after each save (at least 1 always stays).
        log: where rank 0's messages go (warnings about corrupt checkpoints, reseeded RNGs).
        identity: recorded in every checkpoint; on resume a checkpoint whose identity differs (other than in
            ``free`` keys) is skipped by name, and none fitting is a one-line error naming the keys.
        free: keys a resumed run may change (budget, logging, evaluation, device).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        world: World,
        keep: int = 2,
        log: Callable[[str], Any] = print,
        identity: Mapping[str, Any] | None = None,
        free: Iterable[str] = (),
    ):
        self.path = Path(path)
        self.world = world
        self.keep = int(keep)
        self.log = log
        self.identity = dict(identity) if identity is not None else None
        self.free = frozenset(free)

    def identity_mismatch(self, state: Mapping[str, Any]) -> str | None:
        """Why a checkpoint's recorded identity is not this run's (None: it is, or one of them records none):
        every recorded key but the ``free`` ones (those a resumed run may change) must be equal."""
        saved = state.get("identity")
        if self.identity is None or not isinstance(saved, Mapping):
            return None
        diff = config_diff(saved, self.identity, self.free)
        return f"it was trained with {describe_diff(diff)}" if diff else None

    @property
    def ckpt_dir(self) -> Path:
        """``<path>/checkpoints``."""
        return self.path / "checkpoints"

    def prepare(self) -> None:
        """Rank 0 creates the checkpoints folder and deletes half-written temporaries of a killed run."""
        if self.world.is_main:
            _first_write(self.path)  # --force: the previous run's files stay aside from now on
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.ckpt_dir)

    def write_config(self, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
        """Rank 0 writes ``cfg`` (the resolved config that runs) atomically as YAML.

        Args:
            cfg: plain values only (YAML safe_dump).
            name: file name inside the run directory.

        Returns:
            The path of the file (also on ranks that did not write it).
        """
        if self.world.is_main:
            return save_config(self.path, cfg, name)
        return self.path / name

    def load_latest(
        self, fits: Callable[[dict[str, Any]], str | None] | None = None
    ) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that verifies and fits this run, read by rank 0 and broadcast (collective).

        Corrupted newer checkpoints, and those ``fits`` rejects (another run's, another config's), are reported
        through ``log`` by name and skipped.

        Args:
            fits: a checkpoint's state -> None if this run can continue it, else why not (one line).

        Returns:
            ``(state, path)``, or None when no checkpoint was written yet (resuming is then starting over,
            which gives the same run).

        Raises:
            SnsError: checkpoints exist but none verifies and fits (naming the newest one that did not fit).
        """
        found, error, misfit = None, None, None
        if self.world.is_main:
            for path in reversed(list_checkpoints(self.ckpt_dir)):
                try:
                    state = load_checkpoint(path, map_location="cpu")
                except SnsError as e:
                    self.log(f"warning: {e}; falling back to the previous checkpoint")
                    continue
                why = self.identity_mismatch(state) or (fits(state) if fits is not None else None)
                if why is None:
                    found = (state, path)
                    break
                misfit = misfit or f"{path}: {why}"
                self.log(f"warning: {path} does not fit this run ({why}); falling back to the previous checkpoint")
            if found is None and misfit:
                error = f"--resume: no checkpoint in {self.ckpt_dir} fits this run: {misfit}"
            elif found is None and list_checkpoints(self.ckpt_dir):
                error = f"--resume: no usable checkpoint in {self.ckpt_dir} (every one is corrupted or truncated)"
            elif found is None:
                self.log(f"--resume: no checkpoint in {self.ckpt_dir} yet; starting from step 0")
        box = self.world.broadcast({"found": found, "error": error})
        if box["error"]:
            raise SnsError(box["error"])
        return box["found"]

    def restore_rng(self, state: dict[str, Any], reseed: int) -> bool:
        """This rank's RNG state from ``state``, or a fresh ``torch.manual_seed(reseed)`` with a warning.

        A run resumed on another number of processes continues its weights, optimizer and data order exactly;
        only the per-rank random streams (augmentation, noise) cannot be, so they are reseeded.

        Args:
            state: a checkpoint written by ``save``.
            reseed: this rank's seed when the world size changed (the caller mixes in step and rank).

        Returns:
            True when the saved state was restored (the resumed run is bit-identical), False when reseeded.
        """
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.world.size:
            set_rank_rng_state(ranks[self.world.rank], self.world.device)
            return True
        self.log(
            f"warning: checkpoint was written by {len(ranks)} process(es), this run has {self.world.size}: "
            "random streams (augmentation, noise) are reseeded, so the run is not bit-identical to an "
            "uninterrupted one"
        )
        torch.manual_seed(reseed % 2**63)
        return False

    def save(self, step: int, payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> Path | None:
        """Checkpoint ``step`` (collective: every rank calls it at the same steps, to gather the RNG states).

        Args:
            step: the number of steps done; names the file ``ckpt-<step>.pt``.
            payload: the loop's state, or a function returning it, called on rank 0 only and after the
                gather (so it may check the state and raise without writing anything).

        Returns:
            The checkpoint's path on rank 0, None on the other ranks.
        """
        rngs = self.world.gather(rank_rng_state(self.world.device))
        if not self.world.is_main:
            return None
        state = dict(payload() if callable(payload) else payload)
        state.update(step=int(step), rng=rngs[0], world_size=self.world.size)
        if self.identity is not None:
            state["identity"] = self.identity
        if self.world.size > 1:
            state["rng_ranks"] = rngs
        path = save_checkpoint(checkpoint_path(self.ckpt_dir, step), state)
        prune_checkpoints(self.ckpt_dir, self.keep)
        return path


def _plain(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)  # lists and tuples, ints and floats from YAML compare equal


def config_diff(saved: Mapping[str, Any], now: Mapping[str, Any], free: Iterable[str] = ()) -> dict[str, tuple]:
    """The keys recorded in both configs, other than ``free`` (those a resumed run may change), whose values
    differ: ``{key: (saved, now)}``. A key missing on one side (added by a later version) is not compared."""
    free = set(free)
    return {k: (saved[k], now[k]) for k in sorted(set(saved) & set(now) - free) if _plain(saved[k]) != _plain(now[k])}


def describe_diff(diff: Mapping[str, tuple], limit: int = 6) -> str:
    """``width=0.25 (now 0.5), method='sns' (now 'vicreg')`` (at most ``limit`` keys, then how many more)."""
    parts = [f"{k}={v[0]!r} (now {v[1]!r})" for k, v in list(diff.items())[:limit]]
    more = len(diff) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def state_fits(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str) -> str | None:
    """None if ``state`` loads into ``module`` strictly (same keys and shapes), else what differs, in one line:
    checked before loading, so a misfit never half-loads the module or ends in torch's multi-line error."""
    if not isinstance(state, Mapping):
        return f"its {name} is not a state dict"
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        return f"its {name} has {len(extra)} unexpected and {len(missing)} missing keys (e.g. {(extra + missing)[0]})"
    for k, t in own.items():
        if tuple(getattr(state[k], "shape", ())) != tuple(t.shape):
            return f"its {name} {k} has shape {tuple(state[k].shape)}, this run's {tuple(t.shape)}"
    return None


def tensors_sha256(module: torch.nn.Module) -> str:
    """A fingerprint of a module's weights and buffers (names, dtypes, shapes, bytes): which teacher a run used,
    whatever path it was loaded from."""
    h = hashlib.sha256()
    for k, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
