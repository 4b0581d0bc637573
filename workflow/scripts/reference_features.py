from coral.cli import setup_job
from coral.metrics import write_reference_features

setup_job(snakemake.log[0], snakemake.threads)
write_reference_features(snakemake.input.reference, snakemake.input.weights, snakemake.params.extractor,
                         snakemake.output.features)
