from coral.cli import setup_job
from coral.figures import tsne_run_figure

setup_job(snakemake.log[0], None)
tsne_run_figure(snakemake.input.features, snakemake.input.separation, snakemake.output[0])
