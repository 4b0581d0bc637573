from coral.cli import setup_job
from coral.classifier import train_classifier

setup_job(snakemake.log[0], snakemake.threads)
train_classifier(snakemake.input.reference, snakemake.params.classifier, snakemake.params.hflip,
                 snakemake.output.checkpoint, snakemake.output.summary)
