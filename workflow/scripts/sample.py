from coral.cli import setup_job
from coral.sample import sample

setup_job(snakemake.log[0], snakemake.threads)
sample(snakemake.input.checkpoint, snakemake.params.sample, snakemake.output.samples, snakemake.output.preview)
