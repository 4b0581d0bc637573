# coral: long-tailed diffusion reproduction workflow.
#
#   snakemake --cores all results/tables/main.csv            # the main table, embedded default preset
#   snakemake --cores all                                    # every table and figure, ablations included
#   snakemake --cores all main                               # every table and figure of the main runs
#   snakemake --cores all results/figures/ablation_tau_sc.png   # one figure and only what it needs
#   snakemake --cores all results/tables/main.csv --config preset=paper   # the paper's matrix (GPUs, datasets)
#
# Artifacts ({setting} = <dataset>-rho<rho> or <dataset>; {run} = {setting}/{variant}/seed{seed}, where
# {variant} is a method or an ablation variant such as coral~tau_sc=0.5; {tag} = {sampler}-w{omega}):
#   results/data/{setting}/split.npz, class_counts.csv          long-tailed training images + labels
#   results/data/{dataset}/reference.npz                        balanced reference images + labels
#   results/classifier/{dataset}/classifier.pt, .json           evaluation classifier
#   results/runs/{run}/config.json, stats.jsonl, checkpoints/, final.pt
#   results/samples/{run}/{tag}.npz, {tag}.png                  uint8 images + labels, preview grid
#   results/metrics/{run}/{tag}.json, {tag}_per_class.csv
#   results/latent/{run}/features.npz, separation.json
#   results/tables/main.csv, per_class.csv, latent.csv, paper_vs_ours.csv/.md, ablation_{study}.csv
#   results/figures/per_class_fid_{setting}.png, tsne_{setting}.png, samples_{setting}_{variant}.png,
#                   training_curves_{setting}.png, ablation_{study}.png, tsne/{run}.png
#   results/logs/<rule>/..., results/benchmarks/<rule>/...; every artifact has a .lineage.json sidecar
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# A broken config.yaml stops with one line naming its line and column (Snakemake's own message names
# neither, or is a traceback). Snakemake reads --configfile files before this runs (README, on --configfile).
import os
import sys

sys.path.insert(0, workflow.basedir)  # coral from this checkout
from coral.config import ConfigError, load_yaml

if os.path.exists("config.yaml"):  # the file the directive below reads, if present (relative to the working directory)
    try:
        load_yaml("config.yaml")
    except ConfigError as err:
        sys.exit(f"config error: {err}")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/latent.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/preflight.smk"  # last: it checks the outputs of the rules above


rule all:
    input:
        ALL_TARGETS,
    default_target: True


rule main:
    """Every table and figure of the main runs (setting x method x seed), without the ablations."""
    input:
        MAIN_TARGETS,
