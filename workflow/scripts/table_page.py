from coral.cli import setup_job
from coral.tables import html_page

setup_job(snakemake.log[0], None)
html_page(snakemake.input[0], snakemake.output[0], snakemake.params.title, snakemake.params.made_by)
