from coral.cli import setup_job
from coral.data import write_reference

setup_job(snakemake.log[0], snakemake.threads)
write_reference(snakemake.params.data, snakemake.output.reference)
