from coral.cli import setup_job
from coral.tables import latent_table

setup_job(snakemake.log[0], None)
latent_table(snakemake.input, snakemake.output[0])
