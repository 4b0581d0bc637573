from coral.cli import setup_job
from coral.data import write_split

setup_job(snakemake.log[0], snakemake.threads)
write_split(snakemake.params.data, snakemake.params.data["rho"], snakemake.output.split, snakemake.output.counts)
