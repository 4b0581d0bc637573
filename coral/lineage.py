"""What produced an artifact: a `<artifact>.lineage.json` beside each one, and the audit that reads them.

A lineage record holds the stage, the config it ran with (seeds included), the code version, the
artifact's SHA-256 and the SHA-256 of every input at the time. Every stage reads its inputs through
`reading`, which checks each against its record first: a damaged file stops the job with one line.
`audit` walks the records from a table back to the data split and checkpoints and flags every file
that changed since it was used (a whole tree, on request; `reading` checks one file, on every use).

Paths in a record are portable: relative to the working directory (the workflow's), a dataset file as
`{data_root}/...` (relative to data.data_root), a file of an installed package as `{site-packages}/...`;
only a file outside all three keeps its absolute path. So an audit of a results tree copied to another
folder or machine, run in the folder holding `results/`, finds every file. Records written before this
(absolute paths) are still read.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import site
import sysconfig
import textwrap
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from coral.io import checksum_path, provenance, read_json, sha256_file, write_json

SUFFIX = ".lineage.json"


def lineage_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


class DamagedArtifact(Exception):
    """An input file is damaged, truncated, empty, unreadable or changed since it was made; one line."""


def verify(path: str | os.PathLike, what: str, rule: str) -> str | None:
    """Check `path` against the SHA-256 written when it was made: in its lineage record, or for a
    checkpoint in its `.sha256` file (coral.checkpoint), whichever exist. Returns the file's SHA-256
    (None if there is no file: the reader's error)."""
    path = Path(path)
    if not path.exists():
        return None
    expected = set()
    record_path, sidecar = lineage_path(path), checksum_path(path)
    if record_path.exists():
        try:
            expected.add(read_json(record_path)["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DamagedArtifact(f"{record_path}: the lineage record of {what} {path} is damaged "
                                  f"({_reason(err)}); delete both and rerun rule {rule}") from None
    if sidecar.exists():
        expected.add(sidecar.read_text().strip())
    actual = sha256_file(path)
    if expected and expected != {actual}:
        raise DamagedArtifact(f"{path}: {what} does not match the SHA-256 recorded when it was made (damaged or "
                              f"changed since); delete it and rerun rule {rule}")
    return actual


# What torch.load, np.load and json raise on a damaged, truncated, empty or malicious file.
READ_ERRORS = (EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile,
               zlib.error, IsADirectoryError, PermissionError)


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str, rule: str) -> Iterator[str | None]:
    """Verify `path` and give its SHA-256 (see verify), then turn a failure of the read in the block into
    one DamagedArtifact line naming the file, what it is and the rule that makes it. Keep the block to
    the read itself."""
    digest = verify(path, what, rule)
    try:
        yield digest
    except READ_ERRORS as err:
        raise DamagedArtifact(f"{path}: {what} cannot be read ({_reason(err)}); delete it and rerun rule {rule}") from err


def read_record(artifact: str | os.PathLike) -> dict | None:
    """The lineage record of `artifact` (None if it has none or it cannot be read)."""
    try:
        return read_json(lineage_path(artifact))
    except (OSError, ValueError):
        return None


def read_json_artifact(path: str | os.PathLike, what: str, rule: str):
    """A JSON artifact, verified and read (see reading)."""
    with reading(path, what, rule):
        return read_json(path)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "empty message"
    return f"{type(err).__name__}: {text[:200]}"


DATA_ROOT = "{data_root}"
SITE_PACKAGES = "{site-packages}"
WIDTH = 100  # the audit's lines are at most this wide


def _site_dirs() -> list[Path]:
    """Where installed packages live for this interpreter (the venv's site-packages first)."""
    dirs = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    with contextlib.suppress(AttributeError):  # site.getsitepackages is missing in some virtualenvs
        dirs += site.getsitepackages()
    with contextlib.suppress(AttributeError):
        dirs.append(site.getusersitepackages())
    return [Path(os.path.abspath(d)) for d in dict.fromkeys(dirs)]


def _under(path: Path, folder: Path) -> str | None:
    """`path` relative to `folder` (both absolute, symlinks kept), or None if it is not inside."""
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return None


def portable(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> str:
    """How a record names `path`: `{data_root}/<rel>` under data_root (unless data_root holds the
    working directory), `{site-packages}/<rel>` inside an installed package, relative to the working
    directory under it, else absolute."""
    absolute, here = Path(os.path.abspath(path)), Path(os.getcwd())
    root = Path(os.path.abspath(data_root)) if data_root is not None else None
    if root is not None and _under(here, root) is None:  # a data_root of "." would swallow results/ too
        rel = _under(absolute, root)
        if rel is not None:
            return f"{DATA_ROOT}/{rel}"
    for folder in _site_dirs():  # before the working directory: a venv often lies inside the checkout
        rel = _under(absolute, folder)
        if rel is not None:
            return f"{SITE_PACKAGES}/{rel}"
    rel = _under(absolute, here)
    return rel if rel is not None else str(absolute)


def locate(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The file a record's path names, on this machine (see portable); `data_root` is where
    data.data_root is here."""
    if name.startswith(DATA_ROOT + "/"):
        return Path(data_root if data_root is not None else "data") / name[len(DATA_ROOT) + 1:]
    if name.startswith(SITE_PACKAGES + "/"):
        rel = name[len(SITE_PACKAGES) + 1:]
        candidates = [folder / rel for folder in _site_dirs()]
        return next((c for c in candidates if c.exists()), candidates[0])
    return Path(name)


def _data_root(config: dict) -> str | None:
    data = config.get("data") if isinstance(config, dict) else None
    root = data.get("data_root") if isinstance(data, dict) else None
    return str(root) if root is not None else None


def record(outputs: Iterable[str | os.PathLike], stage: str, inputs: Iterable[str | os.PathLike],
           config: dict, identity: dict, data_root: str | os.PathLike | None = None) -> None:
    """Write the lineage record of each output (call after the outputs are complete): `config` is what
    the stage ran with, `identity` the part of it that changes its numbers (coral.identity). Inputs
    under `data_root` (default: the config's data.data_root, if it has one) are named relative to it."""
    data_root = str(data_root) if data_root is not None else _data_root(config)
    named = {portable(p, data_root): sha256_file(p) for p in inputs}
    entry = {"stage": stage, "config": config, "identity": identity, "inputs": named, "provenance": provenance()}
    if any(name.startswith(DATA_ROOT + "/") for name in named):
        entry["data_root"] = data_root
    for output in outputs:
        write_json(lineage_path(output), {"artifact": portable(output), "sha256": sha256_file(output), **entry})


def audit(artifact: str | os.PathLike, data_root: str | os.PathLike | None = None) -> tuple[list[str], int]:
    """Lines of the lineage tree of `artifact` and the number of files with a problem in it (missing,
    changed since it was written, or changed since something recorded as made from it was made).

    Each file is printed once, with its stage and provenance; a later use of it is one line that points
    back ("(see above)"). Lines are at most WIDTH columns. Record paths are found as `locate` says,
    dataset files under `data_root` when given (else the data_root each record was made with)."""
    walk = _Audit(data_root)
    walk.visit(str(artifact), Path(artifact), None, 0)
    return walk.lines, len(walk.problems)


class _Audit:
    def __init__(self, data_root: str | os.PathLike | None):
        self.data_root = data_root
        self.lines: list[str] = []
        self.printed: set[str] = set()
        self.problems: set[str] = set()
        self.digests: dict[str, str] = {}

    def _sha(self, key: str, path: Path) -> str:
        if key not in self.digests:
            self.digests[key] = sha256_file(path)
        return self.digests[key]

    def _emit(self, depth: int, text: str) -> None:
        pad = "  " * depth
        self.lines += textwrap.wrap(text, WIDTH, initial_indent=pad, subsequent_indent=pad + "    ",
                                    break_on_hyphens=False) or [pad]

    def _head(self, depth: int, name: str, status: str, label: str = "") -> str:
        """`name  label  status` on one line when it fits; else `name  status`, or `name` with the status
        on the next line (a path is split only when it alone is wider than a line). Returns the label
        when it did not fit, for the line below."""
        pad = "  " * depth
        if label and len(pad) + len(name) + len(label) + len(status) + 4 <= WIDTH:
            self.lines.append(f"{pad}{name}  {label}  {status}")
            return ""
        if len(pad) + len(name) + 2 + len(status) <= WIDTH:
            self.lines.append(f"{pad}{name}  {status}")
        else:
            self._emit(depth, name)
            self._emit(depth + 2, status)
        return label

    def visit(self, name: str, path: Path, used_sha: str | None, depth: int) -> None:
        key = os.path.abspath(path)
        if os.path.isabs(name):  # an old record's absolute path: shown relative to here when it is below
            name = _under(Path(key), Path(os.getcwd())) or name
        changed_since_used = None
        exists = path.is_file()
        if exists and used_sha is not None and self._sha(key, path) != used_sha:
            changed_since_used = "changed since the file it is listed under was made from it"
            self.problems.add(key)
        if key in self.printed:
            status = "CHANGED" if changed_since_used else ("MISSING" if not exists else "")
            self._head(depth, name, f"(see above){'  ' + status if status else ''}")
            if changed_since_used:
                self._emit(depth + 2, changed_since_used)
            return
        self.printed.add(key)
        if not exists:
            self.problems.add(key)
            self._head(depth, name, "MISSING")
            if str(path) != name:
                self._emit(depth + 2, f"looked for {path}")
            return
        record_path = lineage_path(path)
        if not record_path.exists():
            self._head(depth, name, "[no lineage record]" + ("  CHANGED" if changed_since_used else ""))
            if changed_since_used:
                self._emit(depth + 2, changed_since_used)
            return
        try:
            entry = read_json(record_path)
            recorded_sha, origin, inputs = entry["sha256"], entry["provenance"], entry["inputs"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.problems.add(key)
            self._head(depth, name, "DAMAGED RECORD")
            self._emit(depth + 2, f"{record_path}: {_reason(err)}")
            return
        notes = [changed_since_used] if changed_since_used else []
        if recorded_sha != self._sha(key, path):
            notes.insert(0, "changed since it was written (its SHA-256 differs from its lineage record)")
            self.problems.add(key)
        run = entry.get("config", {}).get("run") if isinstance(entry.get("config"), dict) else None
        seed = run.get("seed") if isinstance(run, dict) else None
        label = f"[{entry.get('stage', '?')}" + (f", seed {seed}" if seed is not None else "") + "]"
        label = self._head(depth, name, "CHANGED" if notes else "ok", label)
        commit = origin.get("git_commit") or "no git"
        commit = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
        made = f"coral {origin.get('coral_version')} @ {commit}, {origin.get('created')}"
        self._emit(depth + 2, f"{label}  {made}" if label else made)
        for note in notes:
            self._emit(depth + 2, note)
        data_root = self.data_root if self.data_root is not None else entry.get("data_root")
        for input_name, input_sha in inputs.items():
            self.visit(input_name, locate(input_name, data_root), input_sha, depth + 1)
