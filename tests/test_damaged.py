"""Damaged artifacts are never used silently: each kind of file a stage reads, flipped, truncated or
emptied, stops the stage that reads it with one line naming the file (exit code 1), no traceback.

Faults injected (README, "Damaged files and faults") and the outcome expected of each:
- a flipped byte, a truncation, an empty file: "<file>: <what> does not match the SHA-256 recorded
  when it was made ...; delete it and rerun rule <rule>" (checked against its lineage record);
- the same damage to a file without a lineage record: "<file>: <what> cannot be read (...)";
- a pickle that would run code, as a checkpoint: refused by torch's weights_only loader, one line;
- two trainings on one run directory: the second stops with "... is in use by another process";
- a full disk during a checkpoint (a 1 MB tmpfs) and a read-only results folder: one line, exit 1,
  no partial file left.
"""
import contextlib
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from coral import tables
from coral.cli import main
from coral.io import exclusive
from coral.lineage import DamagedArtifact, lineage_path

import conftest

CONFIG = str(conftest.CONFIG)
SMOKE = ["--config", CONFIG, "--preset", "smoke"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every kind of artifact, made by the CLI at smoke size."""
    root = tmp_path_factory.mktemp("made")
    steps = [
        ["subsample", *SMOKE, "--out-split", root / "split.npz", "--out-counts", root / "counts.csv"],
        ["reference", *SMOKE, "--out", root / "reference.npz"],
        ["train-classifier", *SMOKE, "--reference", root / "reference.npz",
         "--out-checkpoint", root / "classifier.pt", "--out-json", root / "classifier.json"],
        ["reference-features", *SMOKE, "--reference", root / "reference.npz", "--weights", root / "classifier.pt",
         "--out", root / "features.npz"],
        ["train", *SMOKE, "--variant", "ddpm", "--split", root / "split.npz", "--run-dir", root / "run"],
        ["sample", *SMOKE, "--checkpoint", root / "run/final.pt", "--out-npz", root / "samples.npz",
         "--out-png", root / "samples.png"],
        ["evaluate", *SMOKE, "--samples", root / "samples.npz", "--reference", root / "features.npz",
         "--split", root / "split.npz", "--classifier", root / "classifier.pt",
         "--out-json", root / "metrics.json", "--out-per-class", root / "per_class.csv"],
    ]
    for args in steps:
        assert main([str(a) for a in args]) == 0, args
    return root


def consumers(root: Path, out: Path) -> dict[str, tuple[list, str, str]]:
    """Artifact -> (the CLI call that reads it, what it is called, the rule that makes it)."""
    evaluate = ["evaluate", *SMOKE, "--samples", root / "samples.npz", "--reference", root / "features.npz",
                "--split", root / "split.npz", "--classifier", root / "classifier.pt",
                "--out-json", out / "m.json", "--out-per-class", out / "p.csv"]
    return {
        "split.npz": (["train", *SMOKE, "--variant", "ddpm", "--split", root / "split.npz", "--run-dir", out / "run"],
                      "the subsample file", "subsample"),
        "reference.npz": (["train-classifier", *SMOKE, "--reference", root / "reference.npz",
                           "--out-checkpoint", out / "c.pt", "--out-json", out / "c.json"],
                          "the reference file", "reference"),
        "run/final.pt": (["sample", *SMOKE, "--checkpoint", root / "run/final.pt", "--out-npz", out / "s.npz",
                          "--out-png", out / "s.png"], "the trained model", "train"),
        "classifier.pt": (evaluate, "the classifier", "train_classifier"),
        "features.npz": (evaluate, "the reference features file (arrays features, labels, class_names, "
                                   "image_shape, meta)", "reference_features"),
        "samples.npz": (evaluate, "the samples file (arrays images, labels, meta)", "sample"),
    }


def flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


FAULTS = {"flipped byte": flip, "truncated": lambda data: data[:len(data) // 2], "empty": lambda data: b""}


def one_line(args, capfd) -> tuple[int, str]:
    """The exit code and the one line on stderr, besides progress bars and the stage's INFO log (e.g.
    the train header written before a full disk stops it)."""
    code = main([str(a) for a in args])
    err = [line for line in capfd.readouterr().err.splitlines()
           if line.strip() and not re.search(r"\d+%\|", line) and not re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO ", line)]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return code, err[0]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ["split.npz", "reference.npz", "run/final.pt", "classifier.pt", "features.npz",
                                  "samples.npz"])
def test_damaged_artifact_stops_its_reader_with_one_line(made, tmp_path, capfd, name, fault):
    args, what, rule = consumers(made, tmp_path)[name]
    path = made / name
    pristine = path.read_bytes()
    try:
        path.write_bytes(FAULTS[fault](pristine))
        code, line = one_line(args, capfd)
    finally:
        path.write_bytes(pristine)
    assert code == 1 and line == (f"error: {path}: {what} does not match the SHA-256 recorded when it was made "
                                  f"(damaged or changed since); delete it and rerun rule {rule}")


def test_a_checkpoint_without_a_lineage_record_is_checked_against_its_sha256_file(made, tmp_path, capfd):
    args, what, rule = consumers(made, tmp_path)["run/final.pt"]
    path, record = made / "run/final.pt", lineage_path(made / "run/final.pt")
    pristine, pristine_record = path.read_bytes(), record.read_bytes()
    try:
        record.unlink()
        path.write_bytes(flip(pristine))
        code, line = one_line(args, capfd)
    finally:
        path.write_bytes(pristine)
        record.write_bytes(pristine_record)
    assert code == 1 and f"{path}: the trained model does not match the SHA-256" in line, line


@pytest.mark.parametrize("name, fault, reason", [
    ("run/final.pt", "truncated", "cannot be read (RuntimeError: PytorchStreamReader failed"),
    ("run/final.pt", "empty", "cannot be read (EOFError"),
    ("samples.npz", "flipped byte", "cannot be read (BadZipFile: Bad CRC-32"),
    ("samples.npz", "truncated", "cannot be read (BadZipFile"),
])
def test_damage_without_a_lineage_record_is_still_one_line(made, tmp_path, capfd, name, fault, reason):
    """No record to check against (a file from elsewhere): the reader's failure is the one line."""
    args, what, _ = consumers(made, tmp_path)[name]
    path = made / name
    records = {p: p.read_bytes() for p in (lineage_path(path), path.with_name(path.name + ".sha256")) if p.exists()}
    pristine = path.read_bytes()
    try:
        for record in records:
            record.unlink()
        path.write_bytes(FAULTS[fault](pristine))
        code, line = one_line(args, capfd)
    finally:
        path.write_bytes(pristine)
        for record, content in records.items():
            record.write_bytes(content)
    assert code == 1 and line.startswith(f"error: {path}: {what} {reason}"), line


class RunsCode:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-coral-test",))


def test_a_checkpoint_that_would_run_code_is_refused(made, tmp_path, capfd):
    evil = tmp_path / "final.pt"
    evil.write_bytes(pickle.dumps({"ema": RunsCode()}))
    code, line = one_line(["sample", *SMOKE, "--checkpoint", evil, "--out-npz", tmp_path / "s.npz",
                           "--out-png", tmp_path / "s.png"], capfd)
    assert code == 1 and line.startswith(f"error: {evil}: the trained model cannot be read (UnpicklingError"), line


def test_a_damaged_metrics_file_stops_the_table(made, tmp_path):
    metrics = tmp_path / "metrics.json"
    shutil.copy(made / "metrics.json", metrics)
    shutil.copy(lineage_path(made / "metrics.json"), lineage_path(metrics))
    metrics.write_text(metrics.read_text().replace('"fid"', '"fjd"', 1))
    with pytest.raises(DamagedArtifact, match=f"^{metrics}: the metrics file does not match the SHA-256"):
        tables.main_table([metrics], tmp_path / "main.csv")
    assert not (tmp_path / "main.csv").exists()


def test_a_second_training_on_the_same_run_directory_stops(made, tmp_path, capfd):
    run_dir = tmp_path / "run"
    with exclusive(run_dir / ".lock", "the first training"):
        code, line = one_line(["train", *SMOKE, "--variant", "ddpm", "--split", made / "split.npz",
                               "--run-dir", run_dir], capfd)
    assert code == 1 and line == (f"error: run directory {run_dir} is in use by another process "
                                  f"(lock {run_dir / '.lock'}); wait for it to finish or stop it")
    assert not (run_dir / "stats.jsonl").exists()


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A tmpfs mounted on `folder` (root only), unmounted after the block."""
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                reason="mounts a tmpfs: needs root")


@needs_root
def test_a_full_disk_stops_training_with_one_line_and_no_partial_file(made, tmp_path, capfd):
    with tmpfs(tmp_path / "small", "size=1m") as small:
        code, line = one_line(["train", *SMOKE, "--variant", "ddpm", "--split", made / "split.npz",
                               "--run-dir", small / "run"], capfd)
        left = sorted(p.name for p in (small / "run" / "checkpoints").iterdir())
    first = small / "run" / "checkpoints" / "step-00000010.pt"
    assert code == 1 and line == f"error: [Errno 28] no space left on the device writing {first}; free some and rerun"
    assert left == []  # the partial checkpoint was removed


@needs_root
def test_a_read_only_results_folder_stops_with_one_line(made, tmp_path, capfd):
    with tmpfs(tmp_path / "readonly", "ro,size=1m") as readonly:
        code, line = one_line(["train", *SMOKE, "--variant", "ddpm", "--split", made / "split.npz",
                               "--run-dir", readonly / "run"], capfd)
    assert code == 1 and line == f"error: [Errno 30] Read-only file system: '{readonly / 'run'}'"
