"""Lineage records name files portably, and `coral audit` prints a tree once, in 100 columns, and finds
every file again in a copy of the results tree (tiny files, no training)."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from coral import cli, lineage

WIDTH = 100
LONG = "cifar100-rho0.01/coral~tau_sc=0.5~tau_r=1.0/seed0"  # an ablation run's long folder


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_tree(data_root: Path) -> dict[str, Path]:
    """A small workflow tree in the working directory: a dataset file (under data_root, no record) ->
    split -> two checkpoints -> two sample sets -> two metrics files (each also reading the split,
    like evaluate) -> a table. The split is shared by four artifacts."""
    dataset = write(data_root / "toy" / "train.bin", b"raw images")
    files = {"dataset": dataset}
    files["split"] = write(Path("results/data/toy-rho0.1/split.npz"), b"split")
    lineage.record([files["split"]], "subsample", [dataset], {"data": {"data_root": str(data_root)}, "rho": 0.1}, {})
    for method in ("ddpm", "coral"):
        run = f"{LONG}/{method}"
        final = write(Path(f"results/runs/{run}/final.pt"), f"weights {method}".encode())
        lineage.record([final], "train", [files["split"]], {"run": {"seed": 0, "method": method}}, {})
        samples = write(Path(f"results/samples/{run}/ddim50-w1.0.npz"), f"samples {method}".encode())
        lineage.record([samples], "sample", [final], {"run": {"seed": 0}}, {})
        metrics = write(Path(f"results/metrics/{run}/ddim50-w1.0.json"), f'{{"fid": "{method}"}}'.encode())
        lineage.record([metrics], "evaluate", [samples, files["split"]], {"run": {"seed": 0}}, {})
        files.update({f"final_{method}": final, f"samples_{method}": samples, f"metrics_{method}": metrics})
    files["table"] = write(Path("results/tables/main.csv"), b"method,fid\n")
    lineage.record([files["table"]], "main_table", [files["metrics_ddpm"], files["metrics_coral"]], {}, {})
    return files


ARTIFACTS = ["split", "final_ddpm", "final_coral", "samples_ddpm", "samples_coral", "metrics_ddpm",
             "metrics_coral", "table"]


def full_lines(lines: list[str], path: str) -> list[str]:
    """The lines that print `path` in full (its name, then its stage or status), not a reference back."""
    return [line for line in lines if re.fullmatch(rf"\s*{re.escape(path)}(  (?!\(see above\)).*)?", line)]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    work = tmp_path / "A"
    work.mkdir()
    monkeypatch.chdir(work)
    files = make_tree(tmp_path / "datasets")  # data_root outside the working directory
    return work, files


def test_records_name_no_absolute_path(tree, tmp_path):
    work, files = tree
    for name in ARTIFACTS:
        record = json.loads(lineage.lineage_path(files[name]).read_text())
        assert not os.path.isabs(record["artifact"]) and not any(map(os.path.isabs, record["inputs"])), record
    split = json.loads(lineage.lineage_path(files["split"]).read_text())
    assert split["artifact"] == "results/data/toy-rho0.1/split.npz"
    assert list(split["inputs"]) == ["{data_root}/toy/train.bin"]
    assert split["data_root"] == str(tmp_path / "datasets")  # where the audit looks unless told otherwise
    metrics = json.loads(lineage.lineage_path(files["metrics_coral"]).read_text())
    assert list(metrics["inputs"]) == [f"results/samples/{LONG}/coral/ddim50-w1.0.npz",
                                       "results/data/toy-rho0.1/split.npz"]


def test_audit_prints_each_artifact_once_within_100_columns(tree):
    work, files = tree
    lines, problems = lineage.audit("results/tables/main.csv")
    text = "\n".join(lines)
    assert problems == 0, text
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    for name in ARTIFACTS:
        assert len(full_lines(lines, str(files[name]))) == 1, (name, text)
    split = str(files["split"])
    assert sum(split in line and "(see above)" in line for line in lines) == 3, text  # four users, one print
    assert "CHANGED" not in text and "MISSING" not in text
    assert full_lines(lines, str(files["final_coral"]))[0].endswith("final.pt  ok")  # the stage on the next line
    assert "results/data/toy-rho0.1/split.npz  [subsample]  ok" in text
    assert "{data_root}/toy/train.bin  [no lineage record]" in text


def test_audit_of_a_copied_tree_then_one_damaged_file(tree, tmp_path, monkeypatch, capfd):
    work, files = tree
    copy = tmp_path / "B"
    shutil.copytree(work, copy)
    shutil.move(tmp_path / "datasets", tmp_path / "moved-datasets")  # the datasets live elsewhere there
    shutil.rmtree(work)  # nothing of A is left to be found by an absolute path
    monkeypatch.chdir(copy)
    lines, problems = lineage.audit("results/tables/main.csv", data_root=tmp_path / "moved-datasets")
    assert problems == 0, "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines)
    # Without --data-root the dataset file is looked for where the record says data_root was.
    lines, problems = lineage.audit("results/tables/main.csv")
    text = "\n".join(lines)
    assert problems == 1 and "{data_root}/toy/train.bin  MISSING\n              looked for" in text, text
    assert cli.main(["audit", "results/tables/main.csv", "--data-root", str(tmp_path / "moved-datasets")]) == 0
    assert capfd.readouterr().out.rstrip().endswith("every artifact matches the inputs it was made from")

    split = copy / files["split"]
    data = bytearray(split.read_bytes())
    data[2] ^= 0xFF
    split.write_bytes(bytes(data))
    lines, problems = lineage.audit("results/tables/main.csv", data_root=tmp_path / "moved-datasets")
    text = "\n".join(lines)
    assert problems == 1, text  # one file, however many artifacts were made from it
    assert all(len(line) <= WIDTH for line in lines)
    flagged = [line for line in lines if "CHANGED" in line]
    assert len(flagged) == 4 and all(str(files["split"]) in line for line in flagged), text  # printed once + 3 uses
    assert len(full_lines(lines, str(files["split"]))) == 1
    assert "differs from its lineage record" in text
    assert cli.main(["audit", "results/tables/main.csv", "--data-root", str(tmp_path / "moved-datasets")]) == 1
    assert capfd.readouterr().out.rstrip().endswith("1 problem(s): the files marked CHANGED or MISSING above")


def test_old_records_with_absolute_paths_are_still_read(tree):
    work, files = tree
    record_path = lineage.lineage_path(files["table"])
    record = json.loads(record_path.read_text())
    record["inputs"] = {str(work / name): sha for name, sha in record["inputs"].items()}
    record_path.write_text(json.dumps(record))
    lines, problems = lineage.audit("results/tables/main.csv")
    assert problems == 0, "\n".join(lines)
    assert len(full_lines(lines, str(files["metrics_ddpm"]))) == 1  # shown relative to the working directory
    assert all(len(line) <= WIDTH for line in lines)


def test_files_of_installed_packages_and_outside_files(tmp_path, monkeypatch):
    """A dataset shipped in a package (animals) is named inside site-packages, so the record holds no
    venv path; a file outside the working directory, data_root and site-packages stays absolute."""
    import yaml
    installed = Path(yaml.__file__)
    outside = write(tmp_path / "elsewhere" / "weights.pth", b"w")
    monkeypatch.chdir(write(tmp_path / "work" / "x", b"").parent)
    out = write(Path("results/out.bin"), b"out")
    lineage.record([out], "stage", [installed, outside], {}, {})
    inputs = list(json.loads(lineage.lineage_path(out).read_text())["inputs"])
    assert inputs[0].startswith("{site-packages}/") and inputs[0].endswith("yaml/__init__.py")
    assert inputs[1] == str(outside)
    assert lineage.locate(inputs[0]) == installed
    lines, problems = lineage.audit(out)
    assert problems == 0, lines
    assert not os.path.isabs(json.loads(lineage.lineage_path(out).read_text())["artifact"])


def test_a_missing_input_and_a_long_path_are_reported_within_100_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = Path("results/" + "/".join(["a-rather-long-folder-name-for-an-ablation-variant"] * 3))
    first = write(deep / "first.bin", b"1")
    second = write(deep / "second.bin", b"2")
    lineage.record([second], "stage", [first], {}, {})
    first.unlink()
    lines, problems = lineage.audit(second)
    assert problems == 1 and all(len(line) <= WIDTH for line in lines), lines
    assert any("MISSING" in line for line in lines)


def test_a_data_root_holding_the_working_directory_leaves_results_paths_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = write(Path("cifar-10-batches-py/data_batch_1"), b"pickle")
    split = write(Path("results/data/cifar10-rho0.01/split.npz"), b"split")
    lineage.record([split], "subsample", [dataset], {"data": {"data_root": "."}}, {})
    final = write(Path("results/runs/x/final.pt"), b"w")
    lineage.record([final], "train", [split], {"data": {"data_root": "."}}, {})
    assert list(json.loads(lineage.lineage_path(split).read_text())["inputs"]) == ["cifar-10-batches-py/data_batch_1"]
    assert list(json.loads(lineage.lineage_path(final).read_text())["inputs"]) == [str(split)]
    assert lineage.audit(final)[1] == 0
    # the default data_root, data/ under the working directory, names dataset files relative to it
    inside = write(Path("data/cifar-10-batches-py/data_batch_1"), b"pickle")
    lineage.record([split], "subsample", [inside], {"data": {"data_root": "data/"}}, {})
    assert list(json.loads(lineage.lineage_path(split).read_text())["inputs"]) == ["{data_root}/cifar-10-batches-py/data_batch_1"]
    assert lineage.audit(final)[1] == 0
