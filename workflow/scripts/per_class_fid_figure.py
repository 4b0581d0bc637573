from coral.cli import setup_job
from coral.figures import per_class_fid_figure

setup_job(snakemake.log[0], None)
per_class_fid_figure(snakemake.input.table, snakemake.output[0], setting=snakemake.wildcards.setting)
