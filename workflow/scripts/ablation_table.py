from coral.cli import setup_job
from coral.tables import ablation_table

setup_job(snakemake.log[0], None)
ablation_table(snakemake.wildcards.study, snakemake.params.key, snakemake.params.points, snakemake.output[0])
