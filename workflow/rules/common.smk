# Validation first, then the experiment grid and the input functions every rule uses.
import os
import re
import sys

# The Snakefile imports coral from this checkout; jobs find it through workflow/scripts/coral,
# a link to it (Snakemake puts the scripts' folder on sys.path), also in conda environments.
sys.path.insert(0, workflow.basedir)

from coral.config import ConfigError, resolve, run_config

try:
    CFG = resolve(config)
except ConfigError as err:
    sys.exit(f"config error: {err}")

DATASET = CFG["data"]["dataset"]
RHOS = [str(rho) for rho in CFG["data"]["rho"]]
METHODS = CFG["methods"]
SEEDS = [str(seed) for seed in CFG["seeds"]]
SAMPLER = f"ddim{CFG['sample']['steps']}" if CFG["sample"]["sampler"] == "ddim" else "ddpm"
OMEGA = str(CFG["sample"]["omega"])
TAG = f"{SAMPLER}-w{OMEGA}"
RUN = "{dataset}-rho{rho}/{method}/seed{seed}"
ENV = "../../envs/coral.yaml"


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    dataset=_alternatives([DATASET]),
    rho=r"[0-9.e-]+",
    method=_alternatives(METHODS + ["coral_ambient"]),
    seed=r"\d+",
    sampler=r"ddpm|ddim\d+",
    omega=r"[0-9.]+",


def runs(pattern, **fixed):
    """`pattern` expanded over the experiment grid (dataset x rho x method x seed)."""
    grid = {"dataset": [DATASET], "rho": RHOS, "method": METHODS, "seed": SEEDS}
    grid.update({key: [value] for key, value in fixed.items()})
    return expand(pattern, **grid)


def run_params(wildcards):
    return run_config(CFG, wildcards.dataset, float(wildcards.rho), wildcards.method, int(wildcards.seed))


def sample_params(wildcards):
    expected = SAMPLER
    if wildcards.sampler != expected:
        raise ValueError(f"sampler {wildcards.sampler!r} in the target does not match sample.sampler/steps ({expected})")
    return {**CFG["sample"], "omega": float(wildcards.omega)}


def data_params(wildcards):
    return {**CFG["data"], "dataset": wildcards.dataset}


CHECKPOINTS = runs(f"results/runs/{RUN}/final.pt")
METRICS = runs(f"results/metrics/{RUN}/{TAG}.json")
PER_CLASS = runs(f"results/metrics/{RUN}/{TAG}_per_class.csv")
SEPARATION = runs(f"results/latent/{RUN}/separation.json")
FEATURES = runs(f"results/latent/{RUN}/features.npz")
SAMPLE_FIGURES = expand("results/figures/samples_{dataset}-rho{rho}_{method}.png",
                        dataset=[DATASET], rho=RHOS, method=METHODS)
# The final checkpoints are targets too: Snakemake ignores a deleted intermediate file when
# everything after it exists, so listing them makes a deleted checkpoint retrain its run (and
# rerun the chain after it).
ALL_TARGETS = [
    *CHECKPOINTS,
    "results/tables/main.csv",
    "results/tables/per_class.csv",
    "results/tables/latent.csv",
    "results/figures/per_class_fid.png",
    "results/figures/tsne_bottleneck.png",
    *SAMPLE_FIGURES,
]
