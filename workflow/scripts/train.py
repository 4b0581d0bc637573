from coral.cli import setup_job
from coral.train import train

setup_job(snakemake.log[0], snakemake.threads)
train(snakemake.params.run, snakemake.input.split, snakemake.params.run_dir)
