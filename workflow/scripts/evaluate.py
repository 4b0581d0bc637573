from coral.cli import setup_job
from coral.metrics import evaluate
from coral.sections import EvaluateConfig

setup_job(snakemake.log[0], snakemake.threads)
evaluate(snakemake.input.samples, snakemake.input.reference_features, snakemake.input.split,
         snakemake.input.classifier, EvaluateConfig.of(snakemake.params.evaluate, "evaluate"),
         snakemake.output.metrics, snakemake.output.per_class)
