from coral.cli import setup_job
from coral.metrics import evaluate

setup_job(snakemake.log[0], snakemake.threads)
evaluate(snakemake.input.samples, snakemake.input.reference_features, snakemake.input.split,
         snakemake.input.classifier, snakemake.params.evaluate, snakemake.output.metrics, snakemake.output.per_class)
