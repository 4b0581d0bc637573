"""What produced an artifact: a `<artifact>.lineage.json` beside each one, and the audit that reads them.

A lineage record holds the stage, the config it ran with (seeds included), the code version, the
artifact's SHA-256 and the SHA-256 of every input at the time. `audit` walks these records from a
table back to the data split and checkpoints and flags every file that changed since it was used.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from coral.io import provenance, read_json, sha256_file, write_json

SUFFIX = ".lineage.json"


def lineage_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


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
