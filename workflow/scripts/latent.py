from coral.cli import setup_job
from coral.latent import run_latent

setup_job(snakemake.log[0], snakemake.threads)
run_latent(snakemake.input.checkpoint, snakemake.input.split, snakemake.input.reference, snakemake.params.latent,
           snakemake.output.features, snakemake.output.separation, snakemake.output.plot)
