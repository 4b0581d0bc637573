"""A results tree written by the previous release is reused by this one: one run, where only the stages
whose numbers changed on purpose (coral.identity.VERSIONS) run again, and the console says why.

The tree is made by a clone of this repository at PREVIOUS, which is then checked out at this commit
(HEAD) in place, as a user upgrades; the code under test is therefore HEAD, not uncommitted changes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, planned_jobs
from coral.io import sha256_file

pytestmark = pytest.mark.slow  # the workflow end to end

PREVIOUS = "e078002"  # the last commit landed before identities: its trees record params in another form
# what this version recomputes in a tree of PREVIOUS: the claims (version 2) and what shows them
RERUN = {"claims": 1, "claims_figure": 1, "table_page": 1, "all": 1}
CHANGED = {"results/tables/claims.csv", "results/tables/claims.md", "results/tables/claims.html",
           "results/figures/claims.png"}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


# The smoke preset's main runs, without its ablation studies: every kind of job, in half the time.
WITHOUT_STUDIES = {"presets": {"smoke": {"ablations": {"studies": dict.fromkeys(
    ["tau_sc", "tau_r", "omega", "imbalance_vs_scarcity", "label_drop", "coral_reduction", "latent_vs_ambient"])}}}}


def snakemake(clone: Path, work: Path, overlay: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(clone / "Snakefile"), "-d", str(work), "--configfile",
               str(clone / "config.yaml"), str(overlay), *args, "--config", "preset=smoke"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(clone)})


def results(work: Path) -> dict[str, str]:
    """SHA-256 of every result of a tree (logs, benchmarks and lineage records aside)."""
    files = [path for path in (work / "results").rglob("*") if path.is_file() and not path.name.endswith(".json")
             and path.parts[len(work.parts) + 1] not in ("logs", "benchmarks")]
    return {str(path.relative_to(work)): sha256_file(path) for path in files}


def test_a_tree_of_the_previous_release_upgrades_in_one_run(tmp_path):
    head = git("-C", str(REPO), "rev-parse", "HEAD")
    clone, work, overlay = tmp_path / "clone", tmp_path / "work", tmp_path / "without_studies.yaml"
    overlay.write_text(yaml.safe_dump(WITHOUT_STUDIES))
    git("clone", "--quiet", "--no-checkout", str(REPO), str(clone))
    git("-C", str(clone), "fetch", "--quiet", str(REPO), head)
    git("-C", str(clone), "checkout", "--quiet", PREVIOUS)
    made = snakemake(clone, work, overlay, "--cores", "2")
    assert made.returncode == 0, made.stderr[-3000:]
    before = results(work)

    git("-C", str(clone), "checkout", "--quiet", head)  # the upgrade
    plan = snakemake(clone, work, overlay, "-n")
    assert plan.returncode == 0 and planned_jobs(plan) == RERUN, plan.stdout[-3000:] + plan.stderr[-3000:]
    lines = plan.stderr.splitlines()
    assert any(line.startswith("coral: adopted ") and "train 4, sample 4, evaluate 4, latent 4" in line for line in lines)
    assert "coral: rule claims reruns 1 job(s), its identity changed: version: (none) -> 2" in lines
    assert any(line.startswith("coral: claims version 2: ") for line in lines)

    upgraded = snakemake(clone, work, overlay, "--cores", "2")
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    after = results(work)
    assert {name for name in before if before[name] != after.get(name)} <= CHANGED
    assert [name for name in after if name.endswith("final.pt")] and set(before) <= set(after)
    assert planned_jobs(snakemake(clone, work, overlay, "-n")) == {}
