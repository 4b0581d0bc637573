from coral.cli import setup_job
from coral.deadline import exit_for_resubmission
from coral.train import train

setup_job(snakemake.log[0], snakemake.threads)
with exit_for_resubmission():
    train(snakemake.params.run, snakemake.input.split, snakemake.params.run_dir)
