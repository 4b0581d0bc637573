from coral.cli import setup_job
from coral.data import load_split
from coral.figures import tsne_figure

setup_job(snakemake.log[0], None)
split = load_split(snakemake.input.split, with_images=False)
tsne_figure(snakemake.params.panels, split.class_names, split.class_counts, snakemake.output[0])
