from coral.cli import setup_job
from coral.classifier import train_classifier

setup_job(snakemake.log[0], snakemake.threads)
train_classifier(snakemake.params.data, snakemake.params.classifier, snakemake.output.checkpoint,
                 snakemake.output.summary)
