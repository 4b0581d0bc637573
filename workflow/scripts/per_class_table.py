from coral.cli import setup_job
from coral.tables import per_class_table

setup_job(snakemake.log[0], None)
per_class_table(snakemake.params.metrics_of, snakemake.output[0])
