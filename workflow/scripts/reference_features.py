from coral.cli import setup_job
from coral.metrics import write_reference_features
from coral.sections import ExtractorConfig

setup_job(snakemake.log[0], snakemake.threads)
write_reference_features(snakemake.input.reference, snakemake.input.weights,
                         ExtractorConfig.of(snakemake.params.extractor, "evaluate"), snakemake.output.features)
