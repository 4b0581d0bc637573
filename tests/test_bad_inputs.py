"""Bad input: each case stops with one line naming the key or file, the bad value and what is allowed,
with no traceback, and leaves finished results alone."""
import copy

import pytest
import yaml

from coral.cli import main

import conftest

CONFIG = str(conftest.CONFIG)
BASE = yaml.safe_load(open(CONFIG))


def edited(**changes):
    """The config with `section.key=value` edits (a bare key edits the top level)."""
    def apply(cfg):
        for dotted, value in changes.items():
            *sections, key = dotted.split("__")
            target = cfg
            for section in sections:
                target = target[section]
            target[key] = value
        return cfg
    return apply


CONFIG_CASES = [
    (edited(train__stepz=5), "unknown key train.stepz; allowed keys in train: batch_size"),
    (edited(tarin={}), "unknown key tarin; allowed keys: ablations, classifier, cluster, data"),
    (edited(train__steps="many"), "train.steps: 'many' is not of type 'integer'"),
    (edited(train__steps=0), "train.steps: 0 is less than the minimum of 1"),
    (edited(train__batch_size=1), "train.batch_size: 1 is less than the minimum of 2"),
    (edited(train__lr=-1), "train.lr: -1 is less than or equal to the minimum of 0"),
    (edited(train__ema_decay=1.0), "train.ema_decay: 1.0 is greater than or equal to the maximum of 1"),
    (edited(train__p_uncond=1.5), "train.p_uncond: 1.5 is greater than the maximum of 1"),
    (edited(train__label_drop="row"), "train.label_drop: 'row' is not allowed; allowed: batch, sample"),
    (edited(methods=["ddpm", "coarl"]), "methods[1]: 'coarl' is not allowed; allowed: ddpm, cbdm, t2h"),
    (edited(methods=[]), "methods: [] should be non-empty"),
    (edited(seeds=[0, 0]), "seeds: [0, 0] has non-unique elements"),
    (edited(seeds=[-1]), "seeds[0]: -1 is less than the minimum of 0"),
    (edited(data__settings=[{"dataset": "cifar"}]), "data.settings[0].dataset: 'cifar' is not allowed; allowed: animals"),
    (edited(data__settings=[{"dataset": "animals", "rho": 0}]),
     "data.settings[0].rho: 0 is less than or equal to the minimum of 0"),
    (edited(data__settings=[{"dataset": "animals", "rho": 2}]), "data.settings[0].rho: 2 is greater than the maximum of 1"),
    (edited(data__image_size=18), "data.image_size: 18 must be divisible by 2^(len(model.ch_mult) - 1) = 4"),
    (edited(model__ch=48), "model.ch: 48 is not a multiple of 32"),
    (edited(model__attn=[5]), "model.attn: level 5 does not exist; allowed: 0..2"),
    (edited(diffusion__beta_1=0.05), "diffusion.beta_1: 0.05 must be below diffusion.beta_T = 0.02"),
    (edited(sample__sampler="euler"), "sample.sampler: 'euler' is not allowed; allowed: ddpm, ddim"),
    (edited(sample__omega=-1), "sample.omega: -1 is less than the minimum of 0"),
    (edited(sample__omega={"ddpm": 1.0}), "sample.omega: no value for cbdm, t2h, coral, coral_ambient; a per-method"),
    (edited(sample__omega={"dpm": 1.0}), "sample.omega: 'dpm' is not allowed"),
    (edited(sample__num_samples=1001), "sample.num_samples: 1001 must be a multiple of the 10 classes"),
    (edited(objectives__cbdm__prior="balanced"), "objectives.cbdm.prior: 'balanced' is not allowed"),
    (edited(objectives__coral__tau_r=0), "objectives.coral.tau_r: 0 is less than or equal to the minimum of 0"),
    (edited(objectives__coral__weight="coupld"), "objectives.coral.weight: 'coupld' does not match '^coupled$'"),
    (edited(classifier__width=12), "classifier.width: 12 is not a multiple of 8"),
    (edited(evaluate__feature_extractor="inception-v3-compat"),
     "evaluate.inception_weights_path: null; inception-v3-compat needs torch-fidelity's Inception weights, https://"),
    (edited(evaluate__feature_extractor="vgg16"), "evaluate.feature_extractor: 'vgg16' is not allowed; allowed: classifier"),
    (edited(evaluate__prd_max_clusters=0), "evaluate.prd_max_clusters: 0 is less than the minimum of 1"),
    (edited(classifier__test_fraction=1.0), "classifier.test_fraction: 1.0 is greater than or equal to the maximum of 1"),
    (edited(latent__knn_k=0), "latent.knn_k: 0 is less than the minimum of 1"),
    # what a job would refuse for its data's size (animals: 1000 images a class, 10 classes)
    (edited(classifier__batch_size=9001), "classifier.batch_size: 9001 exceeds the 9000 images the classifier of "
                                          "animals trains on"),  # 10000 less a held-out tenth
    (edited(sample__num_samples=50), "sample.num_samples: 50 gives 5 images per class of animals; per-class metrics "
                                     "need at least 6 (evaluate.prc_neighborhood + 1): allowed: 60 or more"),
    (edited(latent__per_class=2), "latent.per_class: 2 gives 20 images of animals; the t-SNE needs at least 4 and "
                                  "more than latent.perplexity = 30"),
    (edited(preset="huge"), "preset: 'huge' is not defined under presets; allowed: claims, embedded, paper, pilot, rehearsal, smoke"),
    (lambda c: c["data"].update(settings=[{"dataset": "cifar10"}]), "data.settings[0].rho: missing; cifar10 is balanced"),
    (lambda c: c["data"].update(settings=[{"dataset": "celeba5", "rho": 0.1}]),
     "data.settings[0].rho: 0.1 is not allowed for celeba5"),
    (lambda c: c["data"].update(settings=[{"dataset": "animals", "rho": 0.1}, {"dataset": "animals", "rho": 0.1}]),
     "lists a setting twice"),
    (lambda c: c.update(dataset_overrides={"cifar": {}}), "dataset_overrides: 'cifar' is not allowed"),
    (lambda c: c.update(dataset_overrides={"animals": {"model": {"ch": 40}}}),
     "model.ch: 40 is not a multiple of 32 (in dataset_overrides.animals)"),
    (lambda c: c["ablations"].update(setting="cifar10-rho0.01"), "ablations.setting: 'cifar10-rho0.01' is not one of"),
    (lambda c: c["ablations"]["studies"]["tau_sc"].update(key="objectives.coral.tau_sd"),
     "ablations.studies.tau_sc.key: 'objectives.coral.tau_sd' is not a config key"),
    (lambda c: c["ablations"]["studies"]["tau_sc"].update(values=[0.1, -1]),
     "ablations.studies.tau_sc.values: -1 is not a valid objectives.coral.tau_sc"),
    (lambda c: c["ablations"]["studies"]["omega"].update(key="latent.seed"),
     "ablations.studies.omega.key: 'latent.seed' cannot be ablated"),
    (lambda c: c["ablations"]["studies"]["tau_sc"].update(methods=["coral", "dpm"]),
     "ablations.studies.tau_sc.methods[1]: 'dpm' is not allowed"),
    (lambda c: c["presets"]["smoke"]["train"].update(stpes=1), "unknown key train.stpes"),
    # names that become file names: nothing may land outside results/
    (lambda c: c["ablations"]["studies"].update({"../../../../escaped": {"methods": ["coral"]}}),
     "ablations.studies: '../../../../escaped' cannot be part of a file name"),
    (lambda c: c["ablations"]["studies"].update({"a/b": {"methods": ["coral"]}}),
     "ablations.studies: 'a/b' cannot be part of a file name"),
    # the batch splits evenly over the devices, and each device's share into micro-batches
    (lambda c: c["train"].update(devices=3), "train.batch_size: 64 does not split evenly over train.devices = 3; "
     "allowed: a multiple of 3"),
    (lambda c: c["train"].update(devices=2, micro_batch_size=5), "train.micro_batch_size: 5 does not divide the per-device batch 32 "
     "(train.batch_size / train.devices); allowed: a divisor of it, or 0"),
    # a tail class needs one image: int(1000 x rho) >= 1 for the 1000 images per class of animals
    (lambda c: c["data"].update(settings=[{"dataset": "animals", "rho": 1e-300}]),
     "data.settings[0].rho: 1e-300 leaves the tail class of animals with int(1000 x 1e-300) = 0 images; "
     "allowed: 0.001 <= rho <= 1"),
]


@pytest.fixture
def finished_result(tmp_path, monkeypatch):
    """A finished artifact in the working directory that no bad input may touch."""
    monkeypatch.chdir(tmp_path)
    result = tmp_path / "results" / "tables" / "main.csv"
    result.parent.mkdir(parents=True)
    result.write_text("method,fid_mean\nddpm,7.1\n")
    yield result
    assert result.read_text() == "method,fid_mean\nddpm,7.1\n"


def run_cli(args, capfd):
    code = main(args)
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    return code, lines


@pytest.mark.parametrize("edit,expected", CONFIG_CASES)
def test_bad_config_value(edit, expected, finished_result, capfd):
    path = finished_result.parents[2] / "config.yaml"
    cfg = copy.deepcopy(BASE)
    edit(cfg)  # edits in place
    path.write_text(yaml.safe_dump(cfg))
    code, lines = run_cli(["check-config", "--config", str(path)], capfd)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("config error: ")
    assert expected in lines[0], lines[0]


FILE_CASES = [
    ("missing.yaml", None, "config file missing.yaml does not exist"),
    ("broken.yaml", "train: {steps: 10\n", "config file broken.yaml is not valid YAML"),
    ("list.yaml", "- 1\n- 2\n", "config file list.yaml must hold a mapping of keys, found list"),
    ("code.yaml", "preset: !!python/object/apply:os.system ['true']\n", "config file code.yaml is not valid YAML"),
    ("colon.yaml", "train:\n  steps: 30\n  lr 0.1\n  warmup: 5\n", "config file colon.yaml is not valid YAML at "
     "line 4, column 3: could not find expected ':' (while scanning a simple key at line 3, column 3)"),
    ("latin1.yaml", b"train:\n  steps: \xff30\n", "config file latin1.yaml: byte 0xff at line 2, column 10 is not UTF-8 "
     "text; save the file as UTF-8"),
]


@pytest.mark.parametrize("name,text,expected", FILE_CASES)
def test_bad_config_file(name, text, expected, finished_result, capfd):
    path = finished_result.parents[2] / name
    if text is not None:
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    code, lines = run_cli(["check-config", "--config", name], capfd)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("config error: ") and expected in lines[0]


@pytest.mark.parametrize("content,expected", [
    (None, "split.npz: no such file; write it with `python -m coral subsample`"),
    (b"not a zip archive", "split.npz: not a file written by `coral subsample`"),
])
def test_missing_or_damaged_split(content, expected, finished_result, capfd):
    split = finished_result.parents[2] / "split.npz"
    if content is not None:
        split.write_bytes(content)
    code, lines = run_cli(["train", "--config", CONFIG, "--preset", "smoke", "--variant", "ddpm",
                           "--split", "split.npz", "--run-dir", "run"], capfd)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_missing_checkpoint_for_sampling(finished_result, capfd):
    code, lines = run_cli(["sample", "--config", CONFIG, "--preset", "smoke", "--checkpoint", "nope/final.pt",
                           "--out-npz", "s.npz", "--out-png", "s.png"], capfd)
    assert code == 2 and len(lines) == 1 and "nope/final.pt" in lines[0]
