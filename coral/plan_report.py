"""`python -m coral plan`: what a target costs before a GPU-hour is spent, and the SLURM resources of
every job, from the cost model (coral.plan).

The jobs of a target come from Snakemake's own dry run in an empty folder, with empty stand-ins for the
dataset files (a dry run reads none): the plan is the DAG that a fresh run executes. The report gives a
row per rule, the jobs whose GPU memory would exceed the card (with the fix) and the batches chosen for
it, the configuration each setting runs against the fastest measured one, the train rule's wall time
per run on 1 to 8 GPUs of one node, and where every figure comes from (measured or assumed).
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from coral import config as config_module
from coral import grid
from coral import measured
from coral.config import ConfigError
from coral.plan import RESUMABLE_RULES, CostModel
from coral.measured import BENCHMARK_DIR
from coral.sources import dataset_files

SNAKEFILE = Path(__file__).resolve().parent.parent / "Snakefile"
DEFAULT_TARGET = "results/tables/main.csv"
DEVICE_COUNTS = (1, 2, 4, 8)  # the multi-GPU rows: GPUs of one node
SOURCE_ENTRIES = 6  # benchmark entries listed per source line
GOAL = {"image_size": 64, "devices": 8, "hours": 10}  # issue 20: a 64 px run on 8 GPUs of one node in 10 h or less


# ---------------------------------------------------------------- the jobs of a target

def resolve_unchecked(raw: dict, preset: str | None = None) -> dict:
    """The config with `preset` merged in and validated, without checking that the datasets are on disk."""
    return config_module.preset_config(raw, preset or raw.get("preset", "embedded"))


def stand_in_config(cfg: dict, folder: Path) -> dict:
    """A copy of a resolved config whose datasets and Inception weights are empty files under `folder`
    (created here), as its only preset: what a dry run needs, never read."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["data_root"] = str(folder / "data")
    for override in cfg["dataset_overrides"].values():
        override.get("data", {}).pop("data_root", None)
    cfg["evaluate"]["inception_weights_path"] = str(folder / "inception-weights.pth")
    cfg["presets"] = {cfg["preset"]: {}}
    paths = [Path(cfg["evaluate"]["inception_weights_path"])]
    for name in grid.settings(cfg):
        paths += dataset_files(grid.setting_config(cfg, name)["data"])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return cfg


def parse_dry_run(text: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job in the output of `snakemake -n`."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            line = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            wildcards = dict(item.split("=", 1) for item in line.group(1).split(", ")) if line else {}
            jobs.append((match.group(1), wildcards))
    return jobs


def dag_jobs(cfg: dict, targets: list[str]) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job Snakemake's dry run plans for `targets` in an empty folder."""
    with tempfile.TemporaryDirectory(prefix="coral-plan-") as tmp:
        folder = Path(tmp)
        configfile = folder / "config.yaml"
        configfile.write_text(yaml.safe_dump(stand_in_config(cfg, folder)))
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(folder / "work"),
                                 "--configfile", str(configfile), "-n", *targets],
                                capture_output=True, text=True)
    output = result.stdout + result.stderr
    jobs = parse_dry_run(output)
    stats = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)
    if result.returncode or not stats or int(stats.group(1)) != len(jobs):
        raise ConfigError(f"targets: Snakemake's dry run of {' '.join(targets)} failed or could not be read: "
                          + " | ".join(output.strip().splitlines()[-5:]))
    return jobs


# ---------------------------------------------------------------- the report

def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _span(values, fmt) -> str:
    low, high = min(values), max(values)
    return fmt(high) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def plan_rows(model: CostModel, jobs: list[tuple[str, dict]]) -> list[dict]:
    """One row per rule, in the order of the dry run: its jobs' costs and resources."""
    by_rule: dict[str, list[dict]] = {}
    for rule, wildcards in jobs:
        by_rule.setdefault(rule, []).append(wildcards)
    rows = []
    for rule, wildcard_list in by_rule.items():
        costs = [model.cost(rule, w) for w in wildcard_list]
        asks = [model.resources(rule, w) for w in wildcard_list]
        walls = [model.wall_seconds(c) for c in costs]
        rows.append({"rule": rule, "jobs": len(costs), "gpu": costs[0].gpu, "costs": costs, "asks": asks,
                     "wall": walls, "gpu_hours": [w * c.devices / 3600 if c.gpu else 0.0 for w, c in zip(walls, costs)],
                     "attempts": [model.attempts(c) for c in costs] if rule in RESUMABLE_RULES else None})
    return rows


def format_plan(model: CostModel, rows: list[dict], header: str) -> list[str]:
    columns = ["rule", "jobs", "GPU-h/job", "GPU-h", "GPU mem GB", "disk GB", "wall/job", "SLURM runtime",
               "attempts", "CPUs", "mem GB"]
    table = []
    for row in rows:
        costs, asks, gpu = row["costs"], row["asks"], row["gpu"]
        table.append([
            row["rule"], str(row["jobs"]),
            _span(row["gpu_hours"], lambda v: f"{v:.2f}") if gpu else "-",
            f"{sum(row['gpu_hours']):.1f}" if gpu else "-",
            _span([c.gpu_memory_gb for c in costs], lambda v: f"{v:.1f}") if gpu else "-",
            f"{sum(c.disk_gb for c in costs):.2f}",
            _span(row["wall"], _duration),
            _span([a["runtime"] for a in asks], lambda v: f"{v} min"),
            _span(row["attempts"], str) if row["attempts"] else "-",
            _span([a["cpus_per_task"] for a in asks], str),
            _span([a["mem_mb"] / 1024 for a in asks], lambda v: f"{v:.0f}"),
        ])
    gpu_rows = [row for row in rows if row["gpu"]]
    table.append(["total", str(sum(row["jobs"] for row in rows)), "",
                  f"{sum(sum(row['gpu_hours']) for row in rows):.1f}",
                  f"{max((c.gpu_memory_gb for row in gpu_rows for c in row['costs']), default=0):.1f}",
                  f"{sum(c.disk_gb for row in rows for c in row['costs']):.2f}", "", "", "", "", ""])
    widths = [max(len(r[i]) for r in [columns, *table]) for i in range(len(columns))]
    lines = [header, ""] + ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                      enumerate(zip(line, widths))) for line in [columns, *table]]
    cap = model.cluster["max_runtime_min"]
    lines += ["", f"partition time limit: cluster.max_runtime_min = {cap} min ({cap / 60:g} h); a longer train or "
                  f"sample run spans several jobs, attempts = jobs per run + cluster.spare_attempts "
                  f"({model.cluster['spare_attempts']}); other rules retry as the profile says",
              "wall/job: one run's wall time over all its SLURM jobs; GPU-h: GPU jobs' wall time x their GPUs; "
              "disk: files written; GB: GiB"]
    too_long = sorted({row["rule"] for row in rows for c in row["costs"] if not model.fits(c)})
    if too_long:
        lines.append(f"WARNING: {', '.join(too_long)} cannot resume and need(s) more than the time limit")
    costs = [c for row in rows for c in row["costs"]]
    lines += [f"WARNING: {warning}" for warning in dict.fromkeys(filter(None, map(model.memory_warning, costs)))]
    fitted = Counter((c.rule, c.fitted) for c in costs if c.fitted)
    lines += [f"fitted to the card: {jobs} {rule} job(s) get {choice}" for (rule, choice), jobs in fitted.items()]
    return lines


def source_lines(costs: list) -> list[str]:
    """Where the figures come from: "how [entry]" sources merged, one line per how with its entries."""
    sources: dict[str, list[str]] = {}
    for source in dict.fromkeys(s for c in costs for s in c.sources):
        how, _, entry = source.partition(" [")
        sources.setdefault(how, []).append(entry.rstrip("]"))
    lines = ["", "figures from:"]
    for how, entries in sources.items():
        entries = [entry for entry in entries if entry]
        more = len(entries) - SOURCE_ENTRIES
        shown = entries[:SOURCE_ENTRIES] + ([f"{more} more"] if more > 0 else [])
        lines.append(f"  {how}" + (f" [{'; '.join(shown)}]" if entries else ""))
    return lines


def configurations(model: CostModel, settings: list[str]) -> list[dict]:
    """Per setting and phase: the configuration it runs and the fastest measured at the same image size and
    batch, for the config's first method (the paper's: DDPM): a training pass over precision, layout,
    compile and CUDA graphs; a guided denoising step over compile only (sampling's precision is a choice
    about accuracy, its layout train.channels_last's)."""
    found, method = [], model.cfg["methods"][0]
    for setting in settings:
        run = model.run_config(setting, method)
        sample = grid.setting_config(model.cfg, setting)["sample"]
        size = run["data"]["image_size"]
        wants = {"training": (model.want("training", run, size, model.micro_batch(run)[0], objective=method),
                              measured.CONFIGURATION),
                 "sampling": (model.want("sampling", {"train": run["train"], "sample": sample}, size,
                                          model.sample_batch(setting, method, 1.0)[0], guided=True), ("compile",))}
        for phase, (want, knobs) in wants.items():
            result = measured.fastest(model.benchmark[phase], want, knobs) if model.benchmark else None
            if result:
                found.append({"setting": setting, "phase": phase, "want": want, "fastest": result[0], "own": result[1]})
    return found


def configuration_lines(model: CostModel, settings: list[str]) -> list[str]:
    if model.benchmark is None:
        return ["", f"configurations: no GPU check of {model.cluster['gpu']} ({model.benchmark_file.name}): "
                    "every step time is assumed"]
    keys = {"training": {"dtype": "train.bf16_autocast", "layout": "train.channels_last", "compile": "train.compile",
                         "cuda_graphs": "train.cuda_graphs"}, "sampling": {"compile": "sample.compile"}}
    grouped: dict[str, list[str]] = {}
    for found in configurations(model, settings):
        phase, own, fastest = found["phase"], found["own"], found["fastest"]
        time_key = measured.TIME_KEY[phase]
        line = f"{phase} {measured.describe_configuration(found['want'])}"
        if own is None:
            line += " is not measured: its figures come from the nearest entry"
        else:
            line += f" ({own[time_key]:.1f} ms at batch {own['batch_size']})"
        if own is None or own[time_key] > (1 + measured.TIE) * fastest[time_key]:
            differ = [keys[phase][key] for key in keys[phase] if measured.value(fastest, key) != found["want"][key]]
            line += (f"; the fastest measured is {measured.describe_configuration(measured.configuration(fastest))} "
                     f"({fastest[time_key]:.1f} ms): set {', '.join(differ)}")
        else:
            line += ": the fastest measured"
        grouped.setdefault(line, []).append(found["setting"])
    eager_only = not any(measured.value(entry, "compile") for entry in model.benchmark["training"])
    note = "; it measured eager steps only: compiled and CUDA-graph steps await a new GPU check" if eager_only else ""
    header = (f"configuration per setting ({model.benchmark_file.name}; within {measured.TIE:.0%} of the fastest "
              f"counts as the fastest{note}):")
    return ["", header] + [f"  {', '.join(names)}: {line}" for line, names in grouped.items()]


def multi_gpu_lines(model: CostModel, runs: list[tuple[str, str]]) -> tuple[list[str], list]:
    """The train rule's wall time per run on 1 to 8 GPUs of one node (train.devices), settings of equal
    figures on one line, and GOAL checked; and the costs they come from."""
    if not runs:
        return [], []
    methods = list(dict.fromkeys(variant for _, variant in runs))
    settings = list(dict.fromkeys(setting for setting, _ in runs))
    rows, walls, all_costs = {}, {}, []
    for devices in DEVICE_COUNTS:
        on = model.with_devices(devices)
        for setting in settings:
            per_device = on.run_config(setting, methods[0])["train"]["batch_size"] // devices
            costs = {m: on.cost("train", {"setting": setting, "variant": m}) for m in methods}
            all_costs += costs.values()
            walls[setting, devices] = {m: on.wall_seconds(c) for m, c in costs.items()}
            cells = [str(devices), str(per_device)]
            cells += [_duration(w) for w in walls[setting, devices].values()]
            cells.append(f"{sum(w * devices for w in walls[setting, devices].values()) / 3600:.1f}")
            rows.setdefault(tuple(cells), []).append(setting)
    columns = ["settings", "GPUs", "images/GPU", *methods, "GPU-h (one seed)"]
    table = [[", ".join(names), *cells] for cells, names in sorted(rows.items(), key=lambda r: (r[1], int(r[0][0])))]
    widths = [max(len(r[i]) for r in [columns, *table]) for i in range(len(columns))]
    lines = ["", "on N GPUs of one node (train.devices: DDP, the global batch split over them), the train rule's "
                 "wall time per run:"]
    lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
              for line in [columns, *table]]
    goal = {(setting, m): w for (setting, devices), per in walls.items() for m, w in per.items()
            if devices == GOAL["devices"] and model.run_config(setting, m)["data"]["image_size"] == GOAL["image_size"]}
    if goal:
        (setting, method), slowest = max(goal.items(), key=lambda item: item[1])
        verdict = "met" if slowest <= GOAL["hours"] * 3600 else "not met"
        lines.append(f"goal: a {GOAL['image_size']} px run on {GOAL['devices']} GPUs of one node in {GOAL['hours']} h "
                     f"of wall time or less: {verdict} by this plan (the slowest, {method} on {setting}: "
                     f"{_duration(slowest)})")
    return lines, all_costs


def plan_report(raw: dict, preset: str | None, targets: list[str], benchmarks: Path = BENCHMARK_DIR) -> str:
    cfg = resolve_unchecked(raw, preset)
    model = CostModel(cfg, benchmarks)
    jobs = dag_jobs(cfg, targets)
    header = (f"coral plan: preset {cfg['preset']}, {' '.join(targets)}: {len(jobs)} jobs (Snakemake's dry run in "
              f"an empty folder), GPU {cfg['cluster']['gpu']} ({model.card_gb:g} GB, {model.usable_gb:.1f} usable)")
    main_runs = [(w["setting"], w["variant"]) for rule, w in jobs if rule == "train" and w["variant"] in cfg["methods"]]
    settings = list(dict.fromkeys(setting for setting, _ in main_runs))
    rows = plan_rows(model, jobs)
    multi_gpu, multi_gpu_costs = multi_gpu_lines(model, list(dict.fromkeys(main_runs)))
    costs = [c for row in rows for c in row["costs"]] + multi_gpu_costs
    return "\n".join(format_plan(model, rows, header) + configuration_lines(model, settings) + multi_gpu
                     + source_lines(costs))
