"""What produced an artifact: a `<artifact>.lineage.json` beside each one, and the audit that reads them.

A lineage record holds the stage, the config it ran with (seeds included), the code version, the
artifact's SHA-256 and the SHA-256 of every input at the time. Every stage reads its inputs through
`reading`, which checks each against its record first: a damaged file stops the job with one line.
`audit` walks the records from a table back to the data split and checkpoints and flags every file
that changed since it was used (a whole tree, on request; `reading` checks one file, on every use).
"""
from __future__ import annotations

import contextlib
import os
import pickle
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


def read_json_artifact(path: str | os.PathLike, what: str, rule: str):
    """A JSON artifact, verified and read (see reading)."""
    with reading(path, what, rule):
        return read_json(path)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "empty message"
    return f"{type(err).__name__}: {text[:200]}"


def record(outputs: Iterable[str | os.PathLike], stage: str, inputs: Iterable[str | os.PathLike],
           config: dict) -> None:
    """Write the lineage record of each output (call after the outputs are complete)."""
    entry = {"stage": stage, "config": config, "inputs": {str(p): sha256_file(p) for p in inputs},
             "provenance": provenance()}
    for output in outputs:
        write_json(lineage_path(output), {"artifact": str(output), "sha256": sha256_file(output), **entry})


def audit(artifact: str | os.PathLike) -> tuple[list[str], int]:
    """Lines of the lineage tree of `artifact` and the number of problems found in it."""
    lines: list[str] = []
    problems = _audit(Path(artifact), None, 0, lines, set())
    return lines, problems


def _audit(path: Path, used_sha: str | None, depth: int, lines: list[str], seen: set[Path]) -> int:
    pad = "  " * depth
    if not path.exists():
        lines.append(f"{pad}{path}  MISSING")
        return 1
    current = sha256_file(path)
    notes, problems = [], 0
    if used_sha is not None and current != used_sha:
        notes.append("CHANGED since it was used")
        problems += 1
    sidecar = lineage_path(path)
    if not sidecar.exists():
        lines.append(f"{pad}{path}  [no lineage record]" + (f"  {'; '.join(notes)}" if notes else ""))
        return problems
    entry = read_json(sidecar)
    if entry["sha256"] != current:
        notes.append("CHANGED since it was written")
        problems += 1
    origin = entry["provenance"]
    run = entry["config"].get("run")
    seed = run.get("seed") if isinstance(run, dict) else None
    label = f"{entry['stage']}" + (f", seed {seed}" if seed is not None else "")
    commit = origin["git_commit"] or "no git"
    commit = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
    label += f", coral {origin['coral_version']} @ {commit}, {origin['created']}"
    lines.append(f"{pad}{path}  [{label}]  {'; '.join(notes) if notes else 'ok'}")
    if path in seen:
        return problems
    seen.add(path)
    for input_path, input_sha in entry["inputs"].items():
        problems += _audit(Path(input_path), input_sha, depth + 1, lines, seen)
    return problems
