"""The workflow's start: checks made before Snakemake runs a job, and so before it deletes any output.

1. `damaged_files`: every artifact under results/ against the SHA-256 of its lineage record (a step
   checkpoint against its .sha256 file). A file changed since it was written stops the run in one line,
   before a job reading it could start, which Snakemake would begin by deleting that job's outputs. A
   file is hashed again only after its size or modification time changed (a cache in .snakemake/coral/).
2. `reconcile`: the outputs of the rules that record an identity (coral.identity), against the identity
   that the config now gives each job. Where it changed, the job reruns (Snakemake compares the rule's
   `identity` param) and the start says why, one line per rule. Where it did not but Snakemake's record
   holds the params in another form (written by an earlier coral), the record is brought to today's
   form: the output is adopted, not rerun.
3. `unusable_checkpoints`: the step checkpoints that a job about to train cannot resume, listed once.

Snakemake's records: .snakemake/metadata/<path, urlsafe base64>, a JSON object whose `params` lists the
repr of each of a job's params that is a builtin value (Settings are not), sorted (Snakemake 9's file
persistence, record format 6).
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coral import identity, lineage
from coral.io import atomic_path, checksum_path, read_json, sha256_file, write_json

CACHE = Path(".snakemake") / "coral" / "verified.json"
METADATA = Path(".snakemake") / "metadata"
INCOMPLETE = Path(".snakemake") / "incomplete"  # outputs of jobs that were killed: Snakemake reruns those
# Stages whose outputs nothing else reads: a changed one is reported, not a reason to stop.
PRODUCTS = ("table_page", "paper_vs_ours")
RECORD_FORMAT = 6  # Snakemake's metadata records that hold comparable params


# ---------------------------------------------------------------- 1. damaged files

def damaged_files(results: Path, cache_path: Path = CACHE, incomplete: Path = INCOMPLETE
                  ) -> tuple[list[str], list[str]]:
    """(errors, warnings): one line per artifact under `results` that changed since it was written. An
    output of a killed job (replaced before its record was) is Snakemake's to rerun, not an error."""
    cache = _read_cache(cache_path)
    seen, errors, warnings = {}, [], []
    for path, expected, rule in _artifacts(results):
        if _record_path(incomplete, str(path)).exists():
            continue
        if expected is None:
            errors.append(f"{lineage.lineage_path(path)}: the lineage record of {path} cannot be read; delete both "
                          "and rerun the rule that writes it")
            continue
        stat = path.stat()
        cached = cache.get(str(path))
        sha = cached[2] if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns] else sha256_file(path)
        seen[str(path)] = [stat.st_size, stat.st_mtime_ns, sha]
        if sha == expected:
            continue
        if rule is None:
            warnings.append(f"{path} does not match its .sha256 file (damaged or interrupted); the run resumes from "
                            "the step checkpoint before it")
            continue
        line = (f"{path} does not match the SHA-256 recorded when rule {rule} wrote it (damaged or changed since); "
                f"delete it and rerun rule {rule}")
        (warnings if rule in PRODUCTS else errors).append(line)
    if seen != cache:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_path, seen)
    return errors, warnings


def _read_cache(path: Path) -> dict:
    try:
        cache = read_json(path)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _artifacts(results: Path):
    """(file, the SHA-256 it was written with, the rule that wrote it) of every artifact with a lineage
    record (SHA-256 None: the record cannot be read), and of every step checkpoint (rule None)."""
    for folder, subfolders, names in os.walk(results):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if name.endswith(lineage.SUFFIX):
                artifact = path.with_name(name[:-len(lineage.SUFFIX)])
                if not artifact.is_file() or _kept_copy(artifact):
                    continue
                record = lineage.read_record(artifact)
                valid = isinstance(record, dict) and isinstance(record.get("sha256"), str)
                yield artifact, record["sha256"] if valid else None, record.get("stage", "?") if valid else "?"
            elif name.startswith("step-") and name.endswith(".pt") and checksum_path(path).is_file():
                yield path, checksum_path(path).read_text().strip(), None


def _kept_copy(path: Path) -> bool:
    """A kept copy (coral.reuse): a second name of an output, checked when it is linked back."""
    return path.parent.parent.name == "kept"


# ---------------------------------------------------------------- 2. what reruns, what is adopted

@dataclass
class Job:
    """One job of a rule that records an identity: its outputs, the identity the config gives it now, and
    the params Snakemake records for it (serialized as Snakemake does)."""
    rule: str
    outputs: list[str]
    identity: dict
    params: list[str]


@dataclass
class Reconciled:
    adopted: dict[str, int] = field(default_factory=dict)  # rule -> jobs whose Snakemake record was updated
    reruns: dict[str, list[str]] = field(default_factory=dict)  # rule -> what changed, one entry per job
    stale: set[str] = field(default_factory=set)  # the first output of each job that reruns
    unrecorded: list[str] = field(default_factory=list)  # stale outputs Snakemake has no record of


def serialized_params(values: Sequence) -> list[str]:
    """How Snakemake records a job's params: the repr of each builtin value, sorted; other objects (a
    Settings) are left out, and so never make a job rerun."""
    builtin = (int, float, bool, str, complex, range, list, tuple, dict, set, frozenset, bytes, bytearray)
    return sorted(repr(value) for value in values if value is None or isinstance(value, builtin))


def reconcile(jobs: Sequence[Job], metadata: Path = METADATA, write: bool = True) -> Reconciled:
    """Compare each job's finished outputs with its identity now (see the module docstring)."""
    result = Reconciled()
    for job in jobs:
        if not all(os.path.exists(output) for output in job.outputs):
            continue  # Snakemake runs it anyway
        record = lineage.read_record(job.outputs[0])
        if not isinstance(record, dict) or "stage" not in record:
            continue
        was = identity.recorded(record)
        records = [_read_snakemake_record(metadata, output) for output in job.outputs]
        if was != job.identity:
            result.reruns.setdefault(job.rule, []).append(describe_change(was, job.identity))
            result.stale.add(job.outputs[0])
            if not any(_comparable(r) for r in records):
                result.unrecorded.append(job.outputs[0])
            continue
        stale = [(output, r) for output, r in zip(job.outputs, records)
                 if _comparable(r) and r["params"] != job.params]
        if stale:
            if write:
                for output, r in stale:
                    _write_snakemake_record(metadata, output, {**r, "params": job.params})
            result.adopted[job.rule] = result.adopted.get(job.rule, 0) + 1
    return result


def _comparable(record: Mapping | None) -> bool:
    return (isinstance(record, Mapping) and record.get("params") is not None
            and record.get("record_format_version", 0) >= RECORD_FORMAT)


def _record_path(metadata: Path, output: str) -> Path:
    """Where Snakemake's file persistence keeps the record of `output` (names longer than the
    filesystem allows are split into folders marked with @)."""
    encoded = base64.urlsafe_b64encode(output.encode()).decode()
    limit = max(os.pathconf(metadata, "PC_NAME_MAX") if metadata.is_dir() else 255, 2) - 1
    parts = [encoded[i:i + limit] for i in range(0, len(encoded), limit)]
    return metadata.joinpath(*["@" + part for part in parts[:-1]], parts[-1])


def _read_snakemake_record(metadata: Path, output: str) -> dict | None:
    try:
        record = json.loads(_record_path(metadata, output).read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _write_snakemake_record(metadata: Path, output: str, record: dict) -> None:
    path = _record_path(metadata, output)
    mode = path.stat().st_mode & 0o777
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record))
    os.chmod(path, mode)


def describe_change(was: Mapping, now: Mapping) -> str:
    """The keys whose values differ between two identities: `key: old -> new`, dotted, at most three."""
    before, after = _flat(was), _flat(now)
    changes = [f"{key}: {_show(before.get(key))} -> {_show(after.get(key))}"
               for key in sorted(set(before) | set(after)) if before.get(key, ...) != after.get(key, ...)]
    return "; ".join(changes[:3]) + (f" (and {len(changes) - 3} more)" if len(changes) > 3 else "")


def _flat(value: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, item in value.items():
        if isinstance(item, Mapping) and item:
            flat.update(_flat(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def _show(value) -> str:
    return "(none)" if value is None else json.dumps(value)


def rerun_lines(reconciled: Reconciled) -> list[str]:
    """What the console says about reruns and adoptions, one line per rule."""
    lines = []
    for rule, changes in reconciled.reruns.items():
        common = max(set(changes), key=changes.count)
        others = len(changes) - changes.count(common)
        lines.append(f"coral: rule {rule} reruns {len(changes)} job(s), its identity changed: {common}"
                     + (f" (and other changes in {others})" if others else ""))
    if reconciled.unrecorded:
        lines.append(f"coral: warning: {len(reconciled.unrecorded)} output(s) were made with another config but "
                     f"Snakemake has no record of them (e.g. {reconciled.unrecorded[0]}), so it does not rerun "
                     "them: delete them, or add --forcerun with their rule")
    if reconciled.adopted:
        counts = ", ".join(f"{rule} {count}" for rule, count in reconciled.adopted.items())
        lines.append(f"coral: adopted {sum(reconciled.adopted.values())} finished job(s) written by an earlier "
                     f"version of coral, whose numbers would not change ({counts}): Snakemake's records of their "
                     "params were brought to this version's form")
    for stage, reason in identity.CHANGES.items():
        if stage in reconciled.reruns or any(rule.startswith(stage) for rule in reconciled.reruns):
            lines.append(f"coral: {reason}")
    return lines


# ---------------------------------------------------------------- 3. step checkpoints that cannot be resumed

def unusable_checkpoints(trainings: Sequence[tuple[str, Path, dict]]) -> list[str]:
    """One line per (stage, checkpoints folder, identity) of a job about to train whose newest intact step
    checkpoint was written for another config: that job sets them aside and starts from step 0."""
    lines = []
    for stage, folder, wanted in trainings:
        steps = sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
        newest = next((p for p in reversed(steps) if _intact(p)), None)
        if newest is None:
            continue
        import torch  # only where there are step checkpoints to read
        theirs, _ = identity.of_checkpoint(stage, torch.load(newest, map_location="cpu", weights_only=True))
        if theirs != wanted:
            lines.append(f"coral: {folder.parent}: its step checkpoints ({newest.name}) were written for another "
                         f"config ({describe_change(theirs, wanted)}); the job sets them aside in {folder}/<digest>/ "
                         "and trains from step 0")
    return lines


def _intact(path: Path) -> bool:
    sidecar = checksum_path(path)
    return sidecar.is_file() and sidecar.read_text().strip() == sha256_file(path)
