from coral.cli import setup_job
from coral.deadline import exit_for_resubmission
from coral.sample import sample

setup_job(snakemake.log[0], snakemake.threads)
with exit_for_resubmission():
    sample(snakemake.input.checkpoint, snakemake.params.sample, snakemake.output.samples, snakemake.output.preview)
