from coral.cli import setup_job
from coral.figures import training_curves_figure

setup_job(snakemake.log[0], None)
training_curves_figure(snakemake.params.runs, snakemake.output[0], setting=snakemake.wildcards.setting)
