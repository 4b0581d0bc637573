from coral.cli import setup_job
from coral.deadline import exit_for_resubmission
from coral.sample import sample
from coral.sections import SampleConfig

setup_job(snakemake.log[0], snakemake.threads)
with exit_for_resubmission():
    sample(snakemake.input.checkpoint, SampleConfig.of(snakemake.params.sample, "sample"), snakemake.output.samples,
           snakemake.output.preview)
