# The workflow's start (coral/preflight.py): checked before any job runs, and so before Snakemake deletes
# the outputs of a job it reruns; in the process that plans the jobs (common.smk, MAIN_PROCESS).
import glob
import inspect

from snakemake.iocontainers import Wildcards

from coral import preflight as coral_preflight


def rule_jobs(rule_name, beside=None):
    """(wildcards, outputs) of each job of a rule, in this config's grid, whose first output is on disk;
    or, with `beside`, that has a file of that name beside where its first output goes."""
    first = workflow.get_rule(rule_name).output[0]  # its pattern holds the grid's wildcard constraints
    pattern = str(first) if beside is None else os.path.join(os.path.dirname(str(first)), beside)
    for path in sorted(glob.glob(re.sub(r"\{[^{}]*\}", "*", pattern))):
        match = first.match(path if beside is None else os.path.join(os.path.dirname(path), os.path.basename(str(first))))
        if match:
            values = match.groupdict()
            yield Wildcards(fromdict=values), [str(output.apply_wildcards(values))
                                               for output in workflow.get_rule(rule_name).output]


def compared_params(params, wildcards):
    """The params Snakemake records of a job: all but those computed from its files (functions that take
    input, output, threads or resources)."""
    derived = {"input", "output", "threads", "resources"}
    return coral_preflight.serialized_params(
        [value(wildcards) if callable(value) else value for value in params.values()
         if not (callable(value) and derived & set(inspect.signature(value).parameters))])


def preflight():
    errors, warnings = coral_preflight.damaged_files(Path("results"))
    for line in warnings:
        print(f"coral: warning: {line}", file=sys.stderr)
    if errors:
        sys.exit("error: " + " | ".join(errors))
    jobs = [coral_preflight.Job(rule, outputs, params["identity"](wildcards), compared_params(params, wildcards))
            for rule, params in TRACKED.items() for wildcards, outputs in rule_jobs(rule)]
    reconciled = coral_preflight.reconcile(jobs)
    # the trainings about to run: a run without its model, or whose model was made with another config
    trainings = [(rule, Path(outputs[0]).parent / "checkpoints", TRACKED[rule]["identity"](wildcards))
                 for rule in ("train", "train_classifier") for wildcards, outputs in rule_jobs(rule, "checkpoints")
                 if not os.path.exists(outputs[0]) or outputs[0] in reconciled.stale]
    for line in coral_preflight.rerun_lines(reconciled) + coral_preflight.unusable_checkpoints(trainings):
        print(line, file=sys.stderr)


if MAIN_PROCESS:
    preflight()
