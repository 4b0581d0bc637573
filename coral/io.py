"""Atomic writes and provenance stamps shared by every stage."""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator


class DatasetError(ValueError):
    """A dataset or data file is missing or malformed; the message names the file and what should be there."""


class Locked(RuntimeError):
    """Another process holds the lock of a run directory or output; the message names it."""


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if need be, never removed) for the block, or raise
    Locked at once: two `coral train` on one run directory would interleave their logs and checkpoints."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(f"{what} is in use by another process (lock {lock_file}); wait for it to finish "
                         "or stop it") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def waiting_lock(lock_file: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if need be, never removed) for the block, waiting
    for another process that holds it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed job therefore never leaves a half-written file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError "unexpected pos"
        if _disk_full(path.parent) and not isinstance(err, OSError):
            raise OSError(errno.ENOSPC, f"no space left on the device writing {path}; free some and rerun") from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _disk_full(folder: Path) -> bool:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < 1 << 20


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def checksum_path(path: str | os.PathLike) -> Path:
    """Where a checkpoint's SHA-256 is kept: `X.pt.sha256` beside `X.pt`."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout holding this package, with '-dirty' if it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    """What produced an artifact: code version, commit, host and time."""
    from coral import __version__
    return {
        "coral_version": __version__,
        "git_commit": git_commit(),
        "host": platform.node(),
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
