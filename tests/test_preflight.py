"""The workflow's start (coral.preflight): damaged files stop it before any job; outputs whose identity
changed are named with what changed; an output of an earlier coral whose identity did not change has
Snakemake's record of it brought to today's form (checked against Snakemake itself)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral import identity, lineage, preflight
from coral.io import checksum_path, sha256_file


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split = write(Path("results/data/toy/split.npz"), b"split")
    lineage.record([split], "subsample", [], {}, {})
    table = write(Path("results/tables/main.html"), b"<html>")
    lineage.record([table], "table_page", [], {}, {})
    step = write(Path("results/runs/toy/ddpm/seed0/checkpoints/step-00000010.pt"), b"state")
    checksum_path(step).write_text(sha256_file(step) + "\n")
    return split, table, step


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))


def test_an_intact_tree_passes_and_each_file_is_hashed_once_until_it_changes(tree, monkeypatch):
    split, _, _ = tree
    assert preflight.damaged_files(Path("results")) == ([], [])
    hashed = []
    monkeypatch.setattr(preflight, "sha256_file", lambda path: hashed.append(path) or sha256_file(path))
    assert preflight.damaged_files(Path("results")) == ([], [])
    assert hashed == []  # same size and time: the cache's hash
    os.utime(split)  # touched, same bytes: hashed again, still intact
    assert preflight.damaged_files(Path("results")) == ([], []) and hashed == [split]


def test_a_changed_input_is_an_error_a_changed_page_or_step_checkpoint_a_warning(tree):
    split, table, step = tree
    for path in tree:
        flip(path)
    errors, warnings = preflight.damaged_files(Path("results"))
    assert errors == ["results/data/toy/split.npz does not match the SHA-256 recorded when rule subsample wrote it "
                      "(damaged or changed since); delete it and rerun rule subsample"]
    assert warnings == [
        "results/runs/toy/ddpm/seed0/checkpoints/step-00000010.pt does not match its .sha256 file (damaged or "
        "interrupted); the run resumes from the step checkpoint before it",
        "results/tables/main.html does not match the SHA-256 recorded when rule table_page wrote it (damaged or "
        "changed since); delete it and rerun rule table_page"]


def test_an_output_of_a_killed_job_is_left_to_snakemake(tree):
    split, _, _ = tree
    flip(split)  # as if a killed job had replaced it before writing its record
    marker = preflight._record_path(preflight.INCOMPLETE, str(split))
    write(marker, b"{}")
    assert preflight.damaged_files(Path("results")) == ([], [])


def test_a_damaged_record_is_an_error(tree):
    split, _, _ = tree
    lineage.lineage_path(split).write_text("{not json")
    errors, _ = preflight.damaged_files(Path("results"))
    assert errors == ["results/data/toy/split.npz.lineage.json: the lineage record of results/data/toy/split.npz "
                      "cannot be read; delete both and rerun the rule that writes it"]


def test_describe_change_names_the_dotted_keys_that_differ():
    was = {"train": {"lr": 0.0005, "steps": 20}, "data": {"hflip": False}}
    now = {"train": {"lr": 0.001, "steps": 20}, "data": {"hflip": False}, "version": 2}
    assert preflight.describe_change(was, now) == "train.lr: 0.0005 -> 0.001; version: (none) -> 2"


def test_serialized_params_are_snakemakes_own():
    from snakemake.persistence import PersistenceBase, UNREPRESENTABLE
    values = [{"b": 1, "a": [1.5, None]}, True, "x", identity.Settings({"log_every": 5}), 3]
    theirs = sorted(s for s in (PersistenceBase._serialize_param_builtin(None, v) for v in values)
                    if s is not UNREPRESENTABLE)
    assert preflight.serialized_params(values) == theirs and len(theirs) == 4


TOY = """
rule made:
    output: "results/made.txt"
    params: identity=config["identity"], settings=config["settings"]
    shell: "echo made > {output}"
"""


def test_an_unchanged_identity_in_another_form_is_adopted_and_snakemake_then_plans_nothing(tmp_path, monkeypatch):
    """A real Snakemake record: its params in an old form make Snakemake rerun the job; once reconciled
    (the lineage identity unchanged), the same dry run plans nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Snakefile").write_text(TOY)

    def snakemake(*args, **config):
        command = [sys.executable, "-m", "snakemake", "--cores", "1", *args, "--config",
                   *[f"{key}={value}" for key, value in config.items()]]
        return subprocess.run(command, capture_output=True, text=True)

    assert snakemake(identity="old-form", settings="x").returncode == 0
    lineage.record(["results/made.txt"], "made", [], {}, {"steps": 20})
    dry = snakemake("-n", identity="new-form", settings="y")
    assert "params have changed" in (dry.stdout + dry.stderr).lower()
    job = preflight.Job("made", ["results/made.txt"], {"steps": 20}, preflight.serialized_params(["new-form", "y"]))
    reconciled = preflight.reconcile([job])
    assert reconciled.adopted == {"made": 1} and not reconciled.reruns
    dry = snakemake("-n", identity="new-form", settings="y")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr

    changed = preflight.Job("made", ["results/made.txt"], {"steps": 21}, preflight.serialized_params([{"steps": 21}]))
    reconciled = preflight.reconcile([changed])
    assert reconciled.reruns == {"made": ["steps: 20 -> 21"]} and reconciled.stale == {"results/made.txt"}
    assert preflight.rerun_lines(reconciled) == ["coral: rule made reruns 1 job(s), its identity changed: steps: 20 -> 21"]
