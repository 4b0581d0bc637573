from coral.claims import read_records, write_claims
from coral.cli import setup_job

setup_job(snakemake.log[0], snakemake.threads)
inputs = snakemake.params.inputs
write_claims(read_records(inputs["main"], inputs["studies"]), snakemake.output.table, snakemake.output.markdown,
             list(snakemake.input))
