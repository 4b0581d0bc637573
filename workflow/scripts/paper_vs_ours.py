from coral.cli import setup_job
from coral.tables import paper_vs_ours

setup_job(snakemake.log[0], None)
paper_vs_ours(snakemake.input.main, snakemake.input.published, snakemake.output.table, snakemake.output.markdown)
