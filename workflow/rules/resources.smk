# What each job asks of a cluster. Every job's runtime (minutes), mem_mb, cpus_per_task (= threads) and
# gpu_mem_gb come from coral's cost model (coral/plan.py; `python -m coral plan` prints them), capped by
# the config's `cluster` limits; the rules of coral.plan.GPU_RULES ask for GPUs: a training run for its
# train.devices GPUs of one node, any other job for one.
#
# train and sample save their state and exit with code 75 before their SLURM time limit, so a run longer
# than cluster.max_runtime_min spans several jobs: their `retries:` (a rule's own retries take
# precedence over the profile's and --retries) are the jobs a run needs plus cluster.spare_attempts.
# They are given where jobs go to a cluster (--jobs N, which cluster executors require; a local run
# uses --cores), and not inside a SLURM job (Snakemake's remote job step), where a run that stopped for
# the time limit must end the job, to be resubmitted with a new allocation. A local job never stops
# early, so a failed one is not run again (its error would be printed twice).
from coral import plan as coral_plan

try:
    COST = coral_plan.CostModel(CFG)
    ON_CLUSTER = workflow.resource_settings.nodes is not None and not workflow.remote_exec
    RETRIES = {name: COST.retries(name) if ON_CLUSTER else 0 for name in coral_plan.RESUMABLE_RULES}
except ConfigError as err:
    sys.exit(f"config error: {err}")


def planned_resources(rule_name):
    """The resources of a rule's jobs, each from its wildcards and attempt (the cost model's CPUs and
    memory of a run on several GPUs are those of its processes together)."""
    def ask(key):
        def resource(wildcards, attempt):
            return COST.resources(rule_name, dict(wildcards.items()), attempt)[key]
        return resource

    gpu = rule_name in coral_plan.GPU_RULES
    resources = {key: ask(key) for key in ["runtime", "mem_mb", "cpus_per_task"] + (["gpu_mem_gb"] if gpu else [])}
    if rule_name == "train":
        resources.update(gpu=train_devices, nodes=1)  # the SLURM plugin's --gpus, on one node
    elif gpu:
        resources["gpu"] = 1
    return resources


def planned_threads(rule_name):
    def threads(wildcards):
        return COST.cost(rule_name, dict(wildcards.items())).cpus
    return threads


def train_devices(wildcards):
    """The GPUs (processes) of a training run: its train.devices."""
    return run_params(wildcards)["train"]["devices"]
