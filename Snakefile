# coral: long-tailed diffusion reproduction workflow (README.md; every file it writes: docs/architecture.md).
#
#   snakemake --cores all results/tables/main.csv           # the main table of the embedded preset
#   snakemake --cores all main_runs                         # every table and figure of the main runs
#   snakemake --cores all                                   # everything, ablations and claims included
#   snakemake --cores all results/tables/main.csv --config preset=paper    # the paper's matrix (GPUs)
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# coral from this checkout. A broken config.yaml (the file the directive below reads, in the working
# directory) stops with one line naming its line and column; Snakemake itself reads --configfile files
# before this runs (docs/reruns.md, Config files).
import os
import sys

sys.path.insert(0, workflow.basedir)
from coral.config import ConfigError, load_yaml

if os.path.exists("config.yaml"):
    try:
        load_yaml("config.yaml")
    except ConfigError as err:
        sys.exit(f"config error: {err}")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/resources.smk"
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


rule main_runs:
    """Every table and figure of the main runs (setting x method x seed), without the ablations."""
    input:
        MAIN_TARGETS,
