"""The costs of the jobs around training and sampling (coral.plan's CostModel dispatches to them):
reading the datasets, the evaluation classifier, reference features, the metrics and the latents. Each
is priced from its FLOPs at the UNet's measured (or assumed) rate, plus the stated assumptions below.
"""
from __future__ import annotations

import json

from coral import grid
from coral.chunks import DISTANCE_BLOCK, KMEANS_BATCH
from coral.costs import CUDA_CONTEXT_GB, GB, HOST_BASE_GB, JobCost
from coral.flops import classifier_figures, parameter_bytes, unet_forward
from coral.sections import LATENT_INPUTS
from coral.sources import IN_CHANNELS, NATURALLY_LONG_TAILED, NUM_CLASSES, image_bytes, image_count

# ---------------------------------------------------------------- stated assumptions
CPU_FLOPS_PER_CORE = 20e9            # BLAS work of the metrics left on the CPU (KID's kernels)
JPEG_SECONDS = 0.01                  # decoding, cropping and resizing one CelebA / ImageNet JPEG, one core
ARRAY_SECONDS = 1e-4                 # reading and resizing one image of an array dataset (CIFAR, animals)
TSNE_SECONDS_PER_POINT = 0.005       # sklearn's Barnes-Hut t-SNE, one core
INCEPTION_FLOPS = 11.4e9             # Inception-v3 at 299x299: 5.7G multiply-adds per image (Szegedy et al. 2016)
INCEPTION_LIVE_BYTES = 20e6          # its live activations per image of a batch


def decode(model, rule: str, data: dict, part: str) -> JobCost:
    images = image_count(data, part)
    jpeg = data["dataset"] in NATURALLY_LONG_TAILED
    stored = images * (image_bytes(data) + 16)  # uint8 images, int64 labels (and indices)
    return model.job(rule, cpu_seconds=images * (JPEG_SECONDS if jpeg else ARRAY_SECONDS),
                     host_memory_gb=HOST_BASE_GB["cpu"] + 2 * stored / GB, disk_gb=stored / GB,
                     sources=(f"{rule}: {'JPEG decoding' if jpeg else 'array reading'} at an assumed "
                              f"{JPEG_SECONDS if jpeg else ARRAY_SECONDS} s per image and core",))


def train_classifier(model, dataset: str) -> JobCost:
    data = grid.dataset_config(model.cfg, dataset)
    clf = grid.dataset_section(model.cfg, dataset, "classifier")
    net = classifier_figures(IN_CHANNELS[dataset], NUM_CLASSES[dataset], clf["width"], data["image_size"],
                      clf["batch_size"])
    eager_fp32 = {"train": {"bf16_autocast": False, "channels_last": False, "compile": False}}  # as it trains
    rate, source = model.training_rate(model.want("training", eager_fp32, data["image_size"], clf["batch_size"],
                                                 objective="ddpm"))
    states = 4 * net["model_bytes"]  # weights, gradients, two Adam moments
    return model.job("train_classifier",
                     gpu_seconds=clf["steps"] * clf["batch_size"] * net["train_flops_per_image"] / rate,
                     gpu_memory_gb=CUDA_CONTEXT_GB + (states + net["saved_bytes"]) / GB,
                     host_memory_gb=HOST_BASE_GB["gpu"] + image_count(data, "reference") * image_bytes(data) / GB,
                     disk_gb=states / GB, memory_fix="lower classifier.batch_size",
                     sources=(f"classifier at the UNet's training FLOP/s: {source}",))


def feature_network(model, setting: str) -> dict:
    """The evaluation's feature network of a setting: FLOPs per image (with the classifier's logits
    beside Inception's features), feature dims, live batch bytes, and the inference rate."""
    scfg = grid.setting_config(model.cfg, setting)
    data, ev, clf = scfg["data"], scfg["evaluate"], scfg["classifier"]
    classes, channels, size = NUM_CLASSES[data["dataset"]], IN_CHANNELS[data["dataset"]], data["image_size"]
    classifier = classifier_figures(channels, classes, clf["width"], size, ev["batch_size"])
    if ev["feature_extractor"] == "inception-v3-compat":
        net = {"flops_per_image": INCEPTION_FLOPS + classifier["forward_flops_per_image"], "dim": 2048,
               "batch_bytes": ev["batch_size"] * INCEPTION_LIVE_BYTES}
    else:
        net = {"flops_per_image": classifier["forward_flops_per_image"], "dim": classifier["feature_dim"],
               "batch_bytes": 0}
    unet = unet_forward(json.dumps(scfg["model"]), size, channels, 1)
    net["rate"], net["source"] = model.inference_rate(
        model.want("sampling", scfg, size, scfg["sample"]["batch_size"], guided=True, compile=False),
        unet["flops_per_image"])
    return net


def reference_features(model, dataset: str) -> JobCost:
    setting = next(name for name, s in grid.settings(model.cfg).items() if s["dataset"] == dataset)
    data = grid.setting_config(model.cfg, setting)["data"]
    net, real = feature_network(model, setting), image_count(data, "reference")
    features = real * net["dim"] * 4
    return model.job(
        "reference_features", gpu_seconds=real * net["flops_per_image"] / net["rate"],
        gpu_memory_gb=CUDA_CONTEXT_GB + net["batch_bytes"] / GB,
        host_memory_gb=HOST_BASE_GB["gpu"] + (real * image_bytes(data) + features) / GB, disk_gb=features / GB,
        memory_fix="lower evaluate.batch_size",
        sources=(f"reference_features: feature networks at the UNet's inference FLOP/s, {net['source']}",))


def evaluate(model, setting: str) -> JobCost:
    """Features of the samples, then every metric on the job's GPU (coral.metrics uses it where there
    is one) except KID (torch-fidelity, on the CPU)."""
    scfg = grid.setting_config(model.cfg, setting)
    data, ev = scfg["data"], scfg["evaluate"]
    classes = NUM_CLASSES[data["dataset"]]
    generated, real = scfg["sample"]["num_samples"], image_count(data, "reference")
    net, n = feature_network(model, setting), generated + real
    dim = net["dim"]
    prc_flops = 2 * dim * n ** 2 * (1 + 1 / classes)  # k-NN distances, overall and per class
    fid_flops = (classes + 1) * 25 * dim ** 3 + 4 * n * dim ** 2  # matrix square roots (~25 d^3), covariances
    # PRD, per run: k-means++ seeding on a sample (its Gram matrix), mini-batch steps, the last assignment
    clusters = min(ev["prd_clusters_per_class"] * classes, ev["prd_max_clusters"], n)
    seeding = min(n, max(3 * clusters, KMEANS_BATCH))
    prd_flops = ev["prd_runs"] * 2 * dim * (seeding ** 2 + (ev["prd_kmeans_steps"] * KMEANS_BATCH + n) * clusters)

    def kid(m):
        return ev["kid_subsets"] * 6 * min(ev["kid_subset_size"], m) ** 2 * dim

    features = n * dim * 4
    return model.job(
        "evaluate", gpu_seconds=(generated * net["flops_per_image"] + prc_flops + fid_flops + prd_flops) / net["rate"],
        cpu_seconds=(kid(min(generated, real)) + classes * kid(min(generated, real) // classes)) / CPU_FLOPS_PER_CORE,
        gpu_memory_gb=CUDA_CONTEXT_GB + (features + 2 * DISTANCE_BLOCK * n * 4 + seeding ** 2 * 4 + net["batch_bytes"]) / GB,
        host_memory_gb=HOST_BASE_GB["gpu"] + (generated * image_bytes(data) + 3 * features + DISTANCE_BLOCK * n * 4) / GB,
        disk_gb=(classes + 1) * 1e3 / GB, memory_fix="lower evaluate.batch_size or evaluate.prd_max_clusters",
        sources=(f"evaluate: feature networks and metrics at the UNet's inference FLOP/s, {net['source']}",
                 f"evaluate: KID on the CPU at an assumed {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s per core"))


def latent(model, setting: str, variant: str) -> JobCost:
    run, latent = model.run_config(setting, variant), grid.setting_config(model.cfg, setting)["latent"]
    data = run["data"]
    classes, channels = NUM_CLASSES[data["dataset"]], IN_CHANNELS[data["dataset"]]
    points = min(latent["per_class"] * classes, image_count(data, "reference"))
    net = unet_forward(json.dumps(run["model"]), data["image_size"], channels, latent["batch_size"])
    rate, source = model.inference_rate(model.want("sampling", grid.setting_config(model.cfg, setting),
                                                  data["image_size"], latent["batch_size"], guided=False,
                                                  compile=False), net["flops_per_image"])
    weights, _ = parameter_bytes(run, channels, classes)
    bottleneck = run["model"]["ch"] * run["model"]["ch_mult"][-1]
    return model.job(
        "latent", gpu_seconds=len(LATENT_INPUTS) * points * net["flops_per_image"] / rate,
        cpu_seconds=points * TSNE_SECONDS_PER_POINT,
        gpu_memory_gb=CUDA_CONTEXT_GB + (weights + net["live_bytes"]) / GB,
        host_memory_gb=HOST_BASE_GB["gpu"] + image_count(data, "reference") * image_bytes(data) / GB,
        disk_gb=points * bottleneck * 4 / GB, memory_fix="lower latent.batch_size",
        sources=(f"latent: FLOPs at {source}", f"latent: t-SNE at an assumed {TSNE_SECONDS_PER_POINT} s per point"))
