from coral.cli import setup_job
from coral.figures import samples_figure

setup_job(snakemake.log[0], None)
samples_figure(snakemake.input[0], snakemake.output[0])
