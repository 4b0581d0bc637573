from coral.cli import setup_job
from coral.classifier import train_classifier
from coral.sections import ClassifierConfig

setup_job(snakemake.log[0], snakemake.threads)
train_classifier(snakemake.input.reference, ClassifierConfig.of(snakemake.params.classifier, "classifier"),
                 snakemake.params.hflip, snakemake.output.checkpoint, snakemake.output.summary)
