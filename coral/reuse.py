"""Finished outputs kept by identity, so a job that Snakemake reruns without a change reuses them.

Snakemake deletes a job's outputs before it runs the job again: after an upstream file was written
again with the same bytes, on `--forcerun`, on a code trigger of a fresh clone. For the stages whose
outputs cost GPU-hours (a trained model, a classifier, a sample set), each finished output is also
hard-linked (no extra disk) into `<folder>/kept/<identity digest>/`, with its lineage record and
checksum file. A job first looks there: a kept output of the same identity, made from inputs with the
same SHA-256 as now and intact, is linked back in place and the job is done.

A kept output goes only with its folder: deleting a run's folder is how to retrain it (docs/reruns.md).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from coral import lineage
from coral.identity import digest
from coral.io import checksum_path, sha256_file

log = logging.getLogger(__name__)

KEPT = "kept"


def kept_path(output: str | os.PathLike, identity: Mapping) -> Path:
    output = Path(output)
    return output.parent / KEPT / digest(identity) / output.name


def _companions(path: Path) -> list[Path]:
    """A file and the sidecars that belong to it: its lineage record and, for a checkpoint, its SHA-256 file."""
    return [path, lineage.lineage_path(path), checksum_path(path)]


def _link(source: Path, target: Path) -> None:
    """`target` becomes another name of `source` (a copy where the filesystem has no hard links), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def keep(outputs: Sequence[str | os.PathLike], identity: Mapping) -> None:
    """Keep finished `outputs` (each with its lineage record) under their identity."""
    for output in map(Path, outputs):
        for source, target in zip(_companions(output), _companions(kept_path(output, identity))):
            if source.exists() and not (target.exists() and os.path.samefile(source, target)):
                _link(source, target)


def restore(outputs: Sequence[str | os.PathLike], identity: Mapping, inputs: Sequence[str | os.PathLike]) -> bool:
    """Link the kept `outputs` of `identity` back in place when every one is intact and was made from
    `inputs` as they are now; True if it did (then the job is done)."""
    kept = [kept_path(output, identity) for output in outputs]
    records = [lineage.read_record(path) for path in kept]
    if not all(path.is_file() for path in kept) or None in records:
        return False
    current = {lineage.portable(path): sha256_file(path) for path in inputs}
    for path, record in zip(kept, records):
        if (record.get("identity") != identity or record.get("inputs") != current
                or record.get("sha256") != sha256_file(path)):
            log.info("not reusing %s: made from other inputs or with another config, or damaged", path)
            return False
    for output, source in zip(map(Path, outputs), kept):
        for source_file, target in zip(_companions(source), _companions(output)):
            if source_file.exists():
                _link(source_file, target)
    log.info("reused %s, kept from an earlier job with the same identity and inputs: nothing recomputed",
             ", ".join(map(str, outputs)))
    return True
