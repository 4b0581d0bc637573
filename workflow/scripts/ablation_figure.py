from coral.cli import setup_job
from coral.figures import ablation_figure

setup_job(snakemake.log[0], None)
ablation_figure(snakemake.input[0], snakemake.output[0])
