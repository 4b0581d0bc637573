from coral.cli import setup_job
from coral.tables import omega_tuned_table

setup_job(snakemake.log[0], None)
omega_tuned_table(snakemake.input, snakemake.params.fixed, snakemake.output[0])
