"""What checking an artifact against its lineage record costs: SHA-256 of a paper-size final.pt
(the 64 px network of the paper preset, model and EMA weights, ImageNet-LT's 1000 classes) beside
loading it, alternated over rounds; the figure is the median ratio (check / load).

    python benchmarks/verify_bench.py            # writes benchmarks/results/verify-cpu.json
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from coral import checkpoint  # noqa: E402
from coral.config import deep_merge, load_yaml  # noqa: E402
from coral.io import sha256_file  # noqa: E402
from coral.unet import build_unet  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "verify-cpu.json"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(rounds: int = 5) -> None:
    raw = load_yaml(Path(__file__).resolve().parent.parent / "config.yaml")
    paper = deep_merge(raw, raw["presets"]["paper"])
    model_cfg = deep_merge(paper, paper["dataset_overrides"]["imagenet_lt"])["model"]
    net = build_unet(model_cfg, 3, 1000)
    state = {"model": net.state_dict(), "ema": net.state_dict(), "step": 0}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "final.pt"
        checkpoint.save(path, state)
        size = path.stat().st_size
        check, load = [], []
        for _ in range(rounds):
            check.append(timed(lambda: sha256_file(path)))
            load.append(timed(lambda: checkpoint.load(path)))
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__},
              "file": "final.pt of the paper preset's 64 px network (model + EMA, 1000 classes)",
              "file_bytes": size, "rounds": rounds, "sha256_seconds": check, "load_seconds": load,
              "median_sha256_seconds": statistics.median(check), "median_load_seconds": statistics.median(load),
              "check_over_load": statistics.median(check) / statistics.median(load),
              "sha256_mb_per_s": size / 1e6 / statistics.median(check)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
