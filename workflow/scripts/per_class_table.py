from coral.cli import setup_job
from coral.tables import per_class_table

setup_job(snakemake.log[0], None)
per_class_table(snakemake.input.metrics, snakemake.input.per_class, snakemake.output[0])
