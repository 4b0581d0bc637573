"""`python -m coral <stage> ...`: every pipeline stage without Snakemake.

Each stage reads the same config.yaml (choose a preset with --preset; merge files of your own over it
with --configfile, as Snakemake does) and writes the same artifacts as the workflow rule of the same
name. `coral audit FILE` prints what an artifact was made from and flags what changed since.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coral import __version__
from coral import config as config_module
from coral import grid
from coral import sections
from coral.deadline import EXIT_RESUBMIT, OutOfTime
from coral.io import DatasetError
from coral.jobs import ONE_LINE_ERRORS, setup_job  # setup_job: what every rule's script starts with


def raw_config(base: str | Path, overlays: list[str | Path] | None = None) -> dict:
    """The base config file with each overlay merged over it in order, as Snakemake merges its
    --configfile files over the Snakefile's config.yaml: mappings merge key by key (deep), any other
    value (lists included) is replaced, and a later file wins. Not validated (see config.resolve)."""
    raw = config_module.load_yaml(base)
    if not isinstance(raw.get("presets"), dict):  # every full config has them; an overlay need not
        raise config_module.ConfigError(f"{base} has no presets, so it is not a whole config; to merge it over "
                                        f"config.yaml use --configfile {base}")
    for overlay in overlays or ():
        raw = grid.deep_merge(raw, config_module.load_yaml(overlay))
    return raw


def _raw_config(args) -> dict:
    return raw_config(args.config, args.configfile)


def _config(args) -> dict:
    raw = _raw_config(args)
    if args.preset is not None:
        raw["preset"] = args.preset
    return config_module.resolve(raw)


def _cmd_check_config(args) -> None:
    cfg = _config(args)
    base = config_module.load_yaml(args.config)
    for line in config_module.preset_warnings(base, _raw_config(args), cfg["preset"]):
        print(line, file=sys.stderr)
    files = " + ".join(str(path) for path in [args.config, *(args.configfile or ())])
    print(f"{files}: valid (preset {cfg['preset']!r}, methods {', '.join(cfg['methods'])})")


def _setting(cfg: dict, name: str | None) -> str:
    """The named setting (default: the first of data.settings); ConfigError when it is not configured."""
    names = list(grid.settings(cfg))
    if name is None:
        return names[0]
    if name not in names:
        raise config_module.ConfigError(f"--setting: {name!r} is not one of data.settings; allowed: {', '.join(names)}")
    return name


def _setting_section(args, section: str):
    """One typed config section as the setting of --setting sees it (its dataset's overrides merged in)."""
    cfg = _config(args)
    return sections.of_setting(cfg, _setting(cfg, args.setting), section)


def _cmd_subsample(args) -> None:
    from coral.data import write_split
    cfg = _config(args)
    data = grid.setting_config(cfg, _setting(cfg, args.setting))["data"]
    write_split(data, data["rho"], args.out_split, args.out_counts)


def _cmd_reference(args) -> None:
    from coral.data import write_reference
    cfg = _config(args)
    dataset = grid.settings(cfg)[_setting(cfg, args.setting)]["dataset"]
    write_reference(grid.dataset_config(cfg, dataset), args.out)


def _cmd_train_classifier(args) -> None:
    from coral.classifier import train_classifier
    cfg = _config(args)
    setting = _setting(cfg, args.setting)
    hflip = grid.setting_config(cfg, setting)["data"]["hflip"]
    train_classifier(args.reference, sections.of_setting(cfg, setting, "classifier"), hflip, args.out_checkpoint,
                     args.out_json)


def _cmd_train(args) -> None:
    from coral.train import train
    cfg = _config(args)
    variants = grid.variants(cfg)
    if args.variant not in variants:
        raise config_module.ConfigError(f"--variant: {args.variant!r} is not a configured method or ablation variant; "
                                        f"allowed: {', '.join(variants)}")
    run_cfg = grid.run_config(cfg, _setting(cfg, args.setting), args.variant, args.seed)
    train(run_cfg, args.split, args.run_dir)


def _cmd_sample(args) -> None:
    from coral.sample import sample
    sample(args.checkpoint, _setting_section(args, "sample"), args.out_npz, args.out_png)


def _cmd_reference_features(args) -> None:
    from coral.metrics import write_reference_features
    write_reference_features(args.reference, args.weights, _setting_section(args, "evaluate").extractor, args.out)


def _cmd_evaluate(args) -> None:
    from coral.metrics import evaluate
    evaluate(args.samples, args.reference, args.split, args.classifier, _setting_section(args, "evaluate"),
             args.out_json, args.out_per_class)


def _cmd_latent(args) -> None:
    from coral.latent import run_latent
    run_latent(args.checkpoint, args.split, args.reference, _setting_section(args, "latent"), args.out_npz,
               args.out_json)


def _cmd_bench(args) -> None:
    from coral.bench import run_benchmark
    result = run_benchmark(_raw_config(args), args.size, args.out, cpu_batch=args.cpu_batch, warmup=args.warmup,
                           repeats=args.repeats, rounds=args.rounds)
    for name, ratio in result["ratios"].items():
        print(f"{name}: {ratio['value']:.3f} (target {ratio['target']}: {'met' if ratio['met'] else 'missed'})")
    step = result["sampling_step"]
    print(f"sampling step ({step['sampler']}, batch {step['batch_size']}): {step['graph_breaks']} graph breaks, "
          f"{step['kernels_per_step_eager']} kernels eager vs {step['kernels_per_step_compiled']} compiled, "
          f"{step['seconds_per_step_eager']:.4f} s vs {step['seconds_per_step_compiled']:.4f} s")


def _cmd_plan(args) -> None:
    from coral.plan_report import DEFAULT_TARGET, plan_report
    raw = _raw_config(args)
    print(plan_report(raw, args.preset, args.targets or [DEFAULT_TARGET], Path(args.benchmarks)))


def _cmd_audit(args) -> int:
    from coral.lineage import audit
    lines, problems = audit(args.artifact, data_root=args.data_root)
    print("\n".join(lines))
    print(f"{problems} problem(s): the files marked CHANGED or MISSING above" if problems
          else "every artifact matches the inputs it was made from")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coral", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"coral {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE",
                                help="a pipeline stage, or audit; `coral STAGE --help` for its arguments")

    def stage(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", default="config.yaml", metavar="FILE",
                       help="the base config file, the workflow's own (default: config.yaml); the "
                            "--configfile files are merged over it")
        p.add_argument("--configfile", "--configfiles", nargs="+", action="extend", default=None, metavar="FILE",
                       help="YAML or JSON files merged over the base config in the given order, as Snakemake's "
                            "--configfile: mappings merge key by key, other values (lists too) are replaced, a "
                            "later file wins; may be repeated (put positional arguments before it)")
        p.add_argument("--preset", default=None,
                       help="preset to apply (default: the merged config's `preset` key)")
        p.add_argument("--log", default=None, metavar="FILE",
                       help="write logs and progress to this file (default: the console)")
        p.add_argument("--threads", type=int, default=None,
                       help="threads for torch and numpy's BLAS (default: their own choice)")
        p.set_defaults(func=func)
        return p

    stage("check-config", _cmd_check_config, "validate a config and exit")
    setting_help = "a setting of data.settings, e.g. animals-rho0.01 (default: the first)"
    p = stage("subsample", _cmd_subsample, "write the long-tailed training set of a setting")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--out-split", required=True, metavar="NPZ",
                   help="the training set to write: images, labels, indices, class counts (split.npz)")
    p.add_argument("--out-counts", required=True, metavar="CSV",
                   help="the class counts to write, with each class's head/medium/tail group (class_counts.csv)")
    p = stage("reference", _cmd_reference, "write the balanced reference set of a setting's dataset")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--out", required=True, metavar="NPZ", help="the reference set to write (reference.npz)")
    p = stage("train-classifier", _cmd_train_classifier, "train the evaluation classifier on a reference set")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--reference", required=True, metavar="NPZ",
                   help="the reference set to train on (stage reference)")
    p.add_argument("--out-checkpoint", required=True, metavar="PT", help="the classifier to write (classifier.pt)")
    p.add_argument("--out-json", required=True, metavar="JSON",
                   help="its held-out accuracy and training summary to write (classifier.json)")
    p = stage("train", _cmd_train, "train (or resume) one diffusion run")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--variant", required=True, help="a method, or an ablation variant such as coral~tau_sc=0.5")
    p.add_argument("--seed", type=int, default=0, help="the training seed (default: 0)")
    p.add_argument("--split", required=True, metavar="NPZ", help="the long-tailed training set (stage subsample)")
    p.add_argument("--run-dir", required=True, metavar="DIR",
                   help="the run's folder: config.json, stats.jsonl, checkpoints/ and final.pt; an unfinished "
                        "run there is resumed")
    p = stage("sample", _cmd_sample, "generate images from a run")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--checkpoint", required=True, metavar="PT", help="the trained model (a run's final.pt)")
    p.add_argument("--out-npz", required=True, metavar="NPZ",
                   help="the samples to write: uint8 images, labels and sampler metadata")
    p.add_argument("--out-png", required=True, metavar="PNG", help="the preview grid to write")
    p = stage("reference-features", _cmd_reference_features, "features of a reference set, for evaluate")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--reference", required=True, help="the reference set (stage reference)")
    p.add_argument("--weights", required=True, help="the classifier checkpoint, or the Inception weights file")
    p.add_argument("--out", required=True, metavar="NPZ", help="the reference features to write")
    p = stage("evaluate", _cmd_evaluate, "metrics of a sample set")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--samples", required=True, metavar="NPZ", help="the generated images (stage sample)")
    p.add_argument("--reference", required=True, help="the reference features (stage reference-features)")
    p.add_argument("--split", required=True, metavar="NPZ",
                   help="the run's training set (stage subsample): its class counts define head, medium and tail")
    p.add_argument("--classifier", required=True, metavar="PT",
                   help="the evaluation classifier (stage train-classifier): per-class accuracy")
    p.add_argument("--out-json", required=True, metavar="JSON", help="the overall and group metrics to write")
    p.add_argument("--out-per-class", required=True, metavar="CSV", help="the per-class metrics to write")
    p = stage("latent", _cmd_latent, "bottleneck features, t-SNE and separation scores of a run")
    p.add_argument("--setting", default=None, help=setting_help)
    p.add_argument("--checkpoint", required=True, metavar="PT", help="the trained model (a run's final.pt)")
    p.add_argument("--split", required=True, metavar="NPZ", help="the run's training set (stage subsample)")
    p.add_argument("--reference", required=True, metavar="NPZ",
                   help="the balanced reference set (stage reference), whose images are embedded")
    p.add_argument("--out-npz", required=True, metavar="NPZ",
                   help="the bottleneck features and t-SNE coordinates to write")
    p.add_argument("--out-json", required=True, metavar="JSON", help="the separation scores to write")
    audit_help = "the lineage of an artifact back to its data split and checkpoints; exit 1 if anything changed"
    p = sub.add_parser("audit", help=audit_help, description=audit_help + ". Run it in the workflow's working "
                       "directory (record paths are relative to it), also on a copy of the results tree.")
    p.add_argument("artifact", help="any artifact with a .lineage.json beside it, e.g. results/tables/main.csv")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="where data.data_root is on this machine, for the dataset files the records name "
                        "(default: the data_root each record was made with)")
    p.set_defaults(func=_cmd_audit, log=None, threads=None)
    p = stage("plan", _cmd_plan, "GPU-hours, GPU memory, disk and wall time of a target's jobs, and the SLURM "
                                 "resources each asks for (no dataset needed)")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="Snakemake targets (default: results/tables/main.csv)")
    p.add_argument("--benchmarks", default="benchmarks/results",
                   help="folder of the GPU check's gpu_check-<GPU>.json (default: benchmarks/results)")
    p = stage("bench", _cmd_bench, "measure training, sampling and metric throughput side by side")
    p.add_argument("--size", default="embedded", metavar="PRESET",
                   help="the preset whose network, image size and batches are measured (default: embedded; "
                        "paper: the paper's 35.7M UNet on 32x32x3); its datasets need not exist")
    p.add_argument("--out", default="benchmarks/results", help="folder of the JSON and CSV results")
    p.add_argument("--cpu-batch", type=int, default=None, help="smaller batch when no GPU is present")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; each figure is their median")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_job(args.log, args.threads)
    try:
        return args.func(args) or 0
    except config_module.ConfigError as err:
        print(f"config error: {err}", file=sys.__stderr__)
        return 2
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.__stderr__)
        return 2
    except ONE_LINE_ERRORS as err:  # a damaged artifact, a locked run, a full disk, a read-only folder
        print(f"error: {err}", file=sys.__stderr__)
        return 1
    except OutOfTime as err:
        print(f"stopped: {err}", file=sys.__stderr__)
        return EXIT_RESUBMIT
