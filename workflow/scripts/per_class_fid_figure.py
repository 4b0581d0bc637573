from coral.cli import setup_job
from coral.figures import per_class_fid_figure
from coral.tables import per_class_table

setup_job(snakemake.log[0], None)
per_class = per_class_table(snakemake.input.metrics, snakemake.input.per_class, None)
per_class_fid_figure(per_class, snakemake.output[0])
