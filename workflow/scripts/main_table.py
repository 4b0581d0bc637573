from coral.cli import setup_job
from coral.tables import main_table

setup_job(snakemake.log[0], None)
main_table(snakemake.input.metrics, snakemake.output[0])
