"""The Snakemake workflow: lint, config errors before any job, the smoke preset end to end, reruns."""
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import standins
from browser import CLICK_THROUGH, DevTools, QuietHandler, report_data
from conftest import CONFIG, SNAKEMAKE, planned_jobs, snakemake
from coral.io import sha256_file

pytestmark = pytest.mark.slow  # the workflow end to end

# rows of each ablation table of the smoke preset: methods x values (a method comparison: one row per method)
STUDY_ROWS = {"latent_vs_ambient": 2, "tau_sc": 2, "tau_r": 2, "omega": 4 * 2, "label_drop": 2, "coral_reduction": 2,
              "imbalance_vs_scarcity": 2}


def test_lint_has_no_findings(tmp_path):
    result = snakemake(tmp_path, "--lint", "--config", "preset=smoke")
    assert result.returncode == 0, result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c["train"].update(stepz=10), "config error: unknown key train.stepz"),
    (lambda c: c["sample"].update(omega="high"), "config error: sample.omega: 'high' is not of type 'number'"),
    (lambda c: c.update(methods=["ddpm", "corall"]), "config error: methods[1]: 'corall' is not allowed"),
])
def test_bad_config_stops_before_any_job(tmp_path, edit, expected):
    cfg = yaml.safe_load(open(CONFIG))
    edit(cfg)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    result = snakemake(tmp_path, "--cores", "1", configfiles=(configfile,))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_key_the_preset_overrides_is_warned_once_at_the_start(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train: {steps: 30}\n")  # the smoke preset sets train.steps: 20
    result = snakemake(tmp_path / "work", "-n", "--config", "preset=smoke", configfiles=(CONFIG, overlay))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: train.steps: your 30 loses to presets.smoke.train.steps = 20; to keep yours, set "
                        "train.steps under presets.smoke or choose another preset"], result.stderr


@pytest.mark.parametrize("text,expected", [
    (b"train:\n  steps: 30\n  lr 0.1\n  warmup: 5\n",
     "config error: config file config.yaml is not valid YAML at line 4, column 3: could not find expected ':'"),
    (b"train:\n  steps: \xff30\n", "config error: config file config.yaml: byte 0xff at line 2, column 10 is not UTF-8"),
])
def test_a_broken_config_yaml_in_the_working_directory_is_one_line(tmp_path, text, expected):
    """The Snakefile's `configfile: "config.yaml"` (the working directory's): coral reads it first."""
    (tmp_path / "config.yaml").write_bytes(text)
    result = snakemake(tmp_path, "-n", "--config", "preset=smoke")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_seeds_from_the_command_line(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "preset=smoke", "seeds=[0,1,2]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result)["train"] == 3 * 10  # 4 methods and the smoke preset's 6 ablation runs, per seed


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    result = snakemake(workdir, "--cores", "2", "--config", "preset=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_smoke_produces_tables_and_figures(smoke_run):
    results = smoke_run / "results"
    main = pd.read_csv(results / "tables" / "main.csv")
    assert main["method"].tolist() == ["ddpm", "cbdm", "t2h", "coral"]
    metric_columns = ["fid_mean", "isc_mean", "kid_mean", "precision_mean", "recall_mean", "prd_f8_mean",
                      "prd_f1_8_mean", "tail_fid_mean", "tail_kid_mean", "tail_accuracy_mean"]
    assert main[metric_columns].notna().all().all()
    assert set(main["sampler"]) == {"ddim"} and set(main["num_samples"]) == {100}
    per_class = pd.read_csv(results / "tables" / "per_class.csv")
    assert len(per_class) == 4 * 10
    for name in ["per_class_fid_animals-rho0.1", "tsne_animals-rho0.1", "samples_animals-rho0.1_coral"]:
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
    # each run's own t-SNE is a figure; the latent stage writes only its features and scores
    for method in ["ddpm", "cbdm", "t2h", "coral"]:
        assert (results / "figures" / "tsne" / "animals-rho0.1" / method / "seed0.png").stat().st_size > 1000
    assert not list((results / "latent").rglob("*.png"))
    for study, rows in STUDY_ROWS.items():
        table = pd.read_csv(results / "tables" / f"ablation_{study}.csv")
        assert len(table) == rows and table["fid_mean"].notna().all(), study
        assert (results / "figures" / f"ablation_{study}.png").stat().st_size > 1000
    omega = pd.read_csv(results / "tables" / "ablation_omega.csv")
    assert omega["omega"].tolist() == [0.0, 1.0] * 4 and set(omega["run"]) == {"ddpm", "cbdm", "t2h", "coral"}
    tau_sc = pd.read_csv(results / "tables" / "ablation_tau_sc.csv")
    assert tau_sc.loc[tau_sc["value"] == 0.1, "run"].item() == "coral"  # the base value is the main run
    diagnosis = pd.read_csv(results / "tables" / "ablation_imbalance_vs_scarcity.csv")
    assert diagnosis["run"].tolist() == ["ddpm", "ddpm~training_set=balanced_scarce"]  # the long-tailed set: the main run
    assert "No setting of this run has published numbers" in (results / "tables" / "paper_vs_ours.md").read_text()
    for log in ["train/animals-rho0.1/coral/seed0.log", "evaluate/animals-rho0.1/ddpm/seed0/ddim5-w1.0.log"]:
        assert (results / "logs" / log).exists()
    assert (results / "benchmarks" / "train" / "animals-rho0.1" / "t2h" / "seed0.tsv").exists()


def test_rerun_does_nothing(smoke_run):
    result = snakemake(smoke_run, "-n", "--config", "preset=smoke")
    assert result.returncode == 0 and planned_jobs(result) == {}, result.stdout


def test_deleting_one_final_checkpoint_reruns_only_its_chain(smoke_run):
    backup = smoke_run / "final.pt.bak"
    final = smoke_run / "results/runs/animals-rho0.1/cbdm/seed0/final.pt"
    shutil.copy2(final, backup)  # with its time: put back, it is no newer than what was made from it
    final.unlink()
    try:
        dry_run = snakemake(smoke_run, "-n", "--config", "preset=smoke")
        jobs = planned_jobs(dry_run)
    finally:
        shutil.move(backup, final)
    # cbdm's main run, and its sample set at omega 0 of the omega study
    assert jobs == {"train": 1, "sample": 2, "evaluate": 2, "latent": 1, "main_table": 1, "per_class_table": 1,
                    "ablation_table": 1, "ablation_figure": 1,
                    "latent_table": 1, "paper_vs_ours": 1, "per_class_fid_figure": 1, "tsne_figure": 1,
                    "tsne_run_figure": 1, "samples_figure": 1, "training_curves": 1, "claims": 1, "claims_figure": 1,
                    "table_page": 7,  # main, per_class, latent, paper_vs_ours, ablation_omega, claims, omega_tuned
                    "omega_tuned_table": 1, "all": 1}, \
        dry_run.stdout + dry_run.stderr


def kept_files(workdir: Path) -> dict[str, str]:
    """SHA-256 of every trained model, classifier and sample set of a tree."""
    files = [*workdir.glob("results/runs/**/final.pt"), *workdir.glob("results/classifier/*/classifier.pt"),
             *workdir.glob("results/samples/**/*.npz")]
    return {str(path.relative_to(workdir)): sha256_file(path) for path in files if "kept" not in path.parts}


@pytest.mark.parametrize("damaged,rule", [("results/data/animals-rho0.1/split.npz", "subsample"),
                                          ("results/data/animals/reference.npz", "reference"),
                                          ("results/runs/animals-rho0.1/ddpm/seed0/final.pt", "train")])
def test_a_damaged_file_stops_the_run_before_any_job_and_every_model_is_kept(smoke_run, tmp_path, damaged, rule):
    """A flipped byte upstream makes Snakemake rerun what reads the file, deleting those outputs first; the
    workflow's start finds it before: one line, no job, every model and sample set still there, byte for byte."""
    workdir = tmp_path / "copy"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    before = kept_files(workdir)
    path = workdir / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # newer than what was made from it: Snakemake would rerun that
    result = snakemake(workdir, "--cores", "1", "--config", "preset=smoke")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: {damaged} does not match the SHA-256 recorded when rule {rule} wrote it (damaged or "
                      f"changed since); delete it and rerun rule {rule}"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Building DAG" not in result.stdout + result.stderr
    after = kept_files(workdir)
    assert {name: sha for name, sha in after.items() if name != damaged} == \
        {name: sha for name, sha in before.items() if name != damaged}


@pytest.mark.parametrize("overlay", [
    "presets:\n  smoke:\n    train: {warmup: 5, lr: 0.0005, grad_clip: 1}\n",  # restated values (1 for 1.0), another order
    "data: {data_root: /nowhere/the/bundled/dataset/reads}\n",
    "presets:\n  smoke:\n    train: {tensorboard_every: 5, log_every: 2, checkpoint_every: 3, keep_checkpoints: 1}\n"
    "    sample: {batch_size: 30}\n    evaluate: {batch_size: 64}\n    latent: {batch_size: 16}\n",
])
def test_an_override_that_changes_no_number_plans_nothing(smoke_run, tmp_path, overlay):
    (tmp_path / "overlay.yaml").write_text(overlay)
    result = snakemake(smoke_run, "-n", "--config", "preset=smoke", configfiles=(CONFIG, tmp_path / "overlay.yaml"))
    assert result.returncode == 0 and planned_jobs(result) == {}, result.stdout[-3000:] + result.stderr[-3000:]


def test_an_override_that_changes_the_weights_reruns_the_trainings_and_says_why(smoke_run, tmp_path):
    (tmp_path / "overlay.yaml").write_text("presets:\n  smoke:\n    train: {lr: 0.001}\n")
    result = snakemake(smoke_run, "-n", "results/tables/main.csv", "--config", "preset=smoke",
                       configfiles=(CONFIG, tmp_path / "overlay.yaml"))
    assert planned_jobs(result)["train"] == 4, result.stdout[-3000:]
    assert "coral: rule train reruns 10 job(s), its identity changed: train.lr: 0.0005 -> 0.001" in \
        result.stderr.splitlines()  # every run of the grid: the main runs and the ablations'


def test_snakemake_killed_while_sampling_then_evaluating_resumes_to_the_same_table(smoke_run, tmp_path):
    """SIGKILL of Snakemake and its jobs mid-stage, twice; `--unlock`, then `--rerun-incomplete` (README);
    the rerun ends with the same main table as the uninterrupted run."""
    workdir = tmp_path / "copy"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    for pattern in ("results/samples/**/*.npz", "results/metrics/**/*.json", "results/tables/main.csv",
                    "results/logs/sample/**/*.log", "results/logs/evaluate/**/*.log"):
        for path in workdir.glob(pattern):
            path.unlink()
    command = SNAKEMAKE + ["-d", str(workdir), "--configfile", str(CONFIG), "--cores", "2",
                           "--rerun-incomplete", "results/tables/main.csv", "--config", "preset=smoke"]
    for stage in ("sample", "evaluate"):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        deadline = time.time() + 300
        while not list((workdir / "results/logs" / stage).rglob("*.log")) and time.time() < deadline:
            time.sleep(0.2)  # logs of this stage appear only once its first job has started
        time.sleep(1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        locked = snakemake(workdir, "--cores", "1", "--rerun-incomplete", "results/tables/main.csv",
                           "--config", "preset=smoke")
        assert locked.returncode != 0 and "LockException" in locked.stderr + locked.stdout
        assert snakemake(workdir, "--unlock", "--config", "preset=smoke").returncode == 0
    result = snakemake(workdir, "--cores", "2", "--rerun-incomplete", "results/tables/main.csv",
                       "--config", "preset=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "results/tables/main.csv").read_text() == (smoke_run / "results/tables/main.csv").read_text()


def test_audit_traces_main_table_to_splits_and_checkpoints(smoke_run):
    def audit():
        return subprocess.run([sys.executable, "-m", "coral", "audit", "results/tables/main.csv"],
                              capture_output=True, text=True, cwd=smoke_run, timeout=300)

    result = audit()
    assert result.returncode == 0, result.stdout + result.stderr
    for method in ["ddpm", "cbdm", "t2h", "coral"]:
        assert f"results/runs/animals-rho0.1/{method}/seed0/final.pt  [train, seed 0" in result.stdout
    assert "results/data/animals-rho0.1/split.npz  [subsample" in result.stdout
    assert "results/data/animals/reference.npz  [reference" in result.stdout
    assert "results/classifier/animals/classifier.pt  [train_classifier" in result.stdout

    checkpoint = smoke_run / "results/runs/animals-rho0.1/t2h/seed0/final.pt"
    original = checkpoint.read_bytes()
    try:
        checkpoint.write_bytes(original + b"\0")
        tampered = audit()
    finally:
        checkpoint.write_bytes(original)
    assert tampered.returncode == 1
    changed = [line for line in tampered.stdout.splitlines() if line.rstrip().endswith("CHANGED")]
    assert changed and all("results/runs/animals-rho0.1/t2h/seed0/final.pt" in line for line in changed), tampered.stdout
    assert "1 problem(s)" in tampered.stdout


@pytest.fixture(scope="module")
def smoke_report(smoke_run):
    """The README's report command on the smoke run (the run's preset), unpacked."""
    started = time.perf_counter()
    report = snakemake(smoke_run, "--report", "results/report.zip", "--config", "preset=smoke")
    seconds = time.perf_counter() - started
    assert report.returncode == 0, report.stderr[-3000:]
    with zipfile.ZipFile(smoke_run / "results/report.zip") as archive:
        archive.extractall(smoke_run / "unpacked")
    return {"workdir": smoke_run, "log": report.stdout + report.stderr, "seconds": seconds,
            "html": smoke_run / "unpacked/report/report.html"}


def test_the_report_with_the_runs_preset_warns_nothing(smoke_report):
    log = smoke_report["log"]
    print(f"report: {smoke_report['seconds']:.1f} s")
    assert "Report created" in log
    assert "Missing metadata" not in log and "does not exist" not in log, log[-3000:]


def test_the_report_holds_every_figure_and_a_page_of_every_table(smoke_report):
    workdir = smoke_report["workdir"]
    results = report_data(smoke_report["html"], "results")
    figures = sorted(str(p.relative_to(workdir)) for p in (workdir / "results/figures").rglob("*.png"))
    csvs = sorted((workdir / "results/tables").glob("*.csv"))
    assert len(figures) >= 4 + 4 + 6 and len(csvs) >= 4 + 6, (figures, csvs)  # runs' t-SNE, samples, ablations
    pages = [str(csv.relative_to(workdir).with_suffix(".html")) for csv in csvs]
    assert sorted(results) == sorted(figures + pages)
    for path, entry in results.items():
        assert (smoke_report["html"].parent / entry["data_uri"]).is_file(), path
        assert entry["caption"].strip(), f"{path} has no caption"


@pytest.mark.browser
def test_every_figure_and_table_displays_when_clicked_in_a_browser(chromium, smoke_report, tmp_path):
    folder = smoke_report["html"].parent  # (chromium first: without it, no smoke run before the skip)
    browser = DevTools(chromium, tmp_path / "profile")  # before the server's thread: Popen's preexec_fn
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.perf_counter()
    try:
        session = browser.open(f"http://127.0.0.1:{server.server_port}/report.html")
        found = json.loads(browser.evaluate(CLICK_THROUGH, session, timeout=300))
    finally:
        browser.close()
        server.shutdown()
    print(f"browser: {time.perf_counter() - started:.1f} s")
    assert found["problems"] == []
    shown = found["shown"]
    results = report_data(smoke_report["html"], "results")
    assert sorted(shown) == sorted(entry["data_uri"] for entry in results.values())  # every result, once
    workdir = smoke_report["workdir"]
    for path, entry in results.items():
        view = shown[entry["data_uri"]]
        if path.endswith(".png"):
            assert view["tag"] == "img" and view["width"] > 100 and view["height"] > 100, (path, view)
        else:
            table = pd.read_csv(workdir / Path(path).with_suffix(".csv"))
            assert view["tag"] == "iframe" and view["height"] > 100, (path, view)
            assert (view["rows"], view["columns"]) == table.shape, (path, view)
            assert view["cells"] == table.size, (path, view)


def test_one_figure_builds_only_what_it_needs(tmp_path):
    result = snakemake(tmp_path, "-n", "results/figures/ablation_tau_r.png", "--config", "preset=smoke")
    jobs = planned_jobs(result)
    assert jobs == {"subsample": 1, "reference": 1, "train_classifier": 1, "reference_features": 1, "train": 2,
                    "sample": 2, "evaluate": 2, "ablation_table": 1, "ablation_figure": 1}, result.stdout + result.stderr
    result = snakemake(tmp_path, "-n", "results/figures/samples_animals-rho0.1_t2h.png", "--config", "preset=smoke")
    assert planned_jobs(result) == {"subsample": 1, "train": 1, "sample": 1, "samples_figure": 1}
    result = snakemake(tmp_path, "-n", "results/figures/tsne/animals-rho0.1/t2h/seed0.png", "--config", "preset=smoke")
    assert planned_jobs(result) == {"subsample": 1, "reference": 1, "train": 1, "latent": 1, "tsne_run_figure": 1}
    result = snakemake(tmp_path, "-n", "results/figures/per_class_fid_animals-rho0.1.png", "--config", "preset=smoke")
    assert planned_jobs(result) == {"subsample": 1, "reference": 1, "train_classifier": 1, "reference_features": 1,
                                    "train": 4, "sample": 4, "evaluate": 4, "per_class_table": 1,
                                    "per_class_fid_figure": 1}, result.stdout + result.stderr


def test_main_target_plans_the_main_runs_without_the_ablations(tmp_path):
    result = snakemake(tmp_path, "-n", "main_runs", "--config", "preset=smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = planned_jobs(result)
    assert jobs == {"subsample": 1, "reference": 1, "train_classifier": 1, "reference_features": 1, "train": 4,
                    "sample": 4, "evaluate": 4, "latent": 4, "main_table": 1, "per_class_table": 1, "latent_table": 1,
                    "paper_vs_ours": 1, "per_class_fid_figure": 1, "tsne_figure": 1, "tsne_run_figure": 4,
                    "samples_figure": 4, "training_curves": 1, "table_page": 4, "main_runs": 1}, \
        result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "results/figures/training_curves_animals-rho0.1.png" in output
    assert "~" not in output  # no ablation variant (coral~tau_sc=...) is trained, sampled or evaluated
    assert "-w0.0" not in output  # nor are the main checkpoints re-sampled for the omega study


def test_a_target_with_another_sampler_than_the_configured_one_has_no_rule(tmp_path):
    target = "results/samples/animals-rho0.1/ddpm/seed0/ddim9-w1.0.npz"  # the smoke preset samples with ddim5
    result = snakemake(tmp_path, "-n", target, "--config", "preset=smoke")
    assert result.returncode != 0 and f"No rule to produce {target}" in result.stderr + result.stdout


def test_paper_preset_plans_the_training_grid(tmp_path):
    standins.touch_paper_layout(tmp_path / "data")
    result = snakemake(tmp_path, "-n", "results/tables/main.csv", "--config", "preset=paper")
    settings, methods, seeds, datasets = 5, 4, 3, 4  # CIFAR10-LT x2, CIFAR100-LT, CelebA-5, ImageNet-LT
    assert planned_jobs(result) == {
        "subsample": settings, "reference": datasets, "train_classifier": datasets, "reference_features": datasets,
        "train": settings * methods * seeds, "sample": settings * methods * seeds,
        "evaluate": settings * methods * seeds, "main_table": 1}, result.stdout + result.stderr
    assert "results/runs/imagenet_lt/coral/seed2/final.pt" in result.stdout
    assert "results/runs/cifar10-rho0.001/t2h/seed1/final.pt" in result.stdout
    # each method samples with its published guidance (sample.omega per method in the paper preset)
    for method, omega in [("ddpm", 0.8), ("cbdm", 1.6), ("t2h", 1.5), ("coral", 0.8)]:
        assert f"results/metrics/celeba5/{method}/seed0/ddpm-w{omega}.json" in result.stdout


def test_paper_omega_tuned_plans_the_study_and_each_methods_own_omega(tmp_path):
    standins.touch_paper_layout(tmp_path / "data")
    result = snakemake(tmp_path, "-n", "results/tables/omega_tuned.csv", "--config", "preset=paper")
    seeds = 3
    sets = 4 * 6 + 3  # the study's six values per method, and DDPM's, CBDM's and CORAL's own omega (T2H's is 1.5)
    assert planned_jobs(result) == {
        "subsample": 1, "reference": 1, "train_classifier": 1, "reference_features": 1, "train": 4 * seeds,
        "sample": sets * seeds, "evaluate": sets * seeds, "omega_tuned_table": 1}, result.stdout + result.stderr
    assert "results/metrics/cifar10-rho0.01/cbdm/seed2/ddpm-w1.6.json" in result.stdout


@pytest.mark.parametrize("study,trained,sampled", [
    ("latent_vs_ambient", 2, 2), ("tau_sc", 5, 5), ("tau_r", 5, 5), ("omega", 4, 4 * 6),
    ("label_drop", 2, 2), ("coral_reduction", 2, 2), ("imbalance_vs_scarcity", 6, 6)])
def test_paper_ablation_targets_plan_their_runs(tmp_path, study, trained, sampled):
    standins.touch_paper_layout(tmp_path / "data")
    result = snakemake(tmp_path, "-n", f"results/tables/ablation_{study}.csv", "--config", "preset=paper")
    seeds = 3  # every point of a study is trained and sampled with each seed, on CIFAR10-LT rho 0.01
    diagnosis = {"subsample_diagnosis": 2} if study == "imbalance_vs_scarcity" else {}  # the two balanced sets
    assert planned_jobs(result) == {
        "subsample": 1, "reference": 1, "train_classifier": 1, "reference_features": 1, "train": trained * seeds,
        "sample": sampled * seeds, "evaluate": sampled * seeds, "ablation_table": 1, **diagnosis}, \
        result.stdout + result.stderr
    assert "results/data/cifar10-rho0.01/split.npz" in result.stdout


def test_paper_claims_plan_every_claim_on_every_setting(tmp_path):
    standins.touch_paper_layout(tmp_path / "data")
    result = snakemake(tmp_path, "-n", "results/tables/claims.csv", "--config", "preset=paper")
    settings, methods, seeds = 5, 4, 3
    # the claims' studies on CIFAR10-LT rho 0.01: coral_ambient (C6), 4 other tau_sc and 4 other tau_r values
    # (C7, C8), DDPM and CORAL on the two balanced sets (C5); the omega study (C9) re-samples the four methods at
    # its 6 values, where T2H's 1.5 is its own (0.8, 1.6, 1.5, 0.8): that point is T2H's main sample set
    trained = settings * methods + 1 + 4 + 4 + 4
    resampled = 4 * 6 - 1
    assert planned_jobs(result) == {
        "subsample": settings, "subsample_diagnosis": 2, "reference": 4, "train_classifier": 4,
        "reference_features": 4, "train": trained * seeds, "sample": (trained + resampled) * seeds,
        "evaluate": (trained + resampled) * seeds, "latent": (settings * methods + 4) * seeds,  # C4 and C5 read it
        "claims": 1}, result.stdout + result.stderr
