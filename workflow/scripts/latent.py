from coral.cli import setup_job
from coral.latent import run_latent
from coral.sections import LatentConfig

setup_job(snakemake.log[0], snakemake.threads)
run_latent(snakemake.input.checkpoint, snakemake.input.split, snakemake.input.reference,
           LatentConfig.of(snakemake.params.latent, "latent"), snakemake.output.features, snakemake.output.separation)
