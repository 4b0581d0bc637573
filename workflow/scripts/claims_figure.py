from coral.cli import setup_job
from coral.figures import claims_figure

setup_job(snakemake.log[0], snakemake.threads)
claims_figure(snakemake.input[0], snakemake.output[0])
