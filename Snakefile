# coral: long-tailed diffusion reproduction workflow.
#
#   snakemake --cores all results/tables/main.csv            # embedded default preset
#   snakemake --cores all --config preset=smoke              # tiny sizes, same DAG
#
# Artifacts ({run} = {dataset}-rho{rho}/{method}/seed{seed}, {tag} = {sampler}-w{omega}):
#   results/data/{dataset}/rho{rho}/split.npz, class_counts.csv   long-tailed split
#   results/classifier/{dataset}/classifier.pt, .json             evaluation feature extractor
#   results/runs/{run}/config.json, stats.jsonl, checkpoints/, final.pt
#   results/samples/{run}/{tag}.npz, {tag}.png                    uint8 images + labels, preview grid
#   results/metrics/{run}/{tag}.json, {tag}_per_class.csv
#   results/latent/{run}/features.npz, separation.json, tsne.png
#   results/tables/main.csv, per_class.csv, latent.csv
#   results/figures/per_class_fid.png, tsne_bottleneck.png, samples_{dataset}-rho{rho}_{method}.png
#   results/logs/<rule>/..., results/benchmarks/<rule>/...
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/latent.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True
