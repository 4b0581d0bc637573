"""The benchmark command runs end to end and its ratios are the quotients of its own measurements."""
import json
import math

import pytest
import torch

from coral import bench
from coral.bench import run_benchmark
from coral.measure import graph_breaks, interleaved_seconds, kernels_per_call
from coral.config import load_yaml


@pytest.mark.slow  # compiles a training step and the sampler's step
def test_benchmark_writes_every_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "NAMES", ("coral",))  # one objective's compile (tests/test_step.py compiles each)
    result = run_benchmark(load_yaml("config.yaml"), "smoke", tmp_path, warmup=1, repeats=1, rounds=1, probe_steps=2,
                           feature_images=200)
    written = json.loads(next(tmp_path.glob("smoke-cpu.json")).read_text())
    assert written["ratios"].keys() == {"coral_over_ddpm_step", "t2h_over_ddpm_step", "cbdm_over_ddpm_step",
                                        "batched_guidance_speedup", "training_speedup_over_naive"}
    training = result["training"]
    assert written["ratios"]["cbdm_over_ddpm_step"]["value"] == pytest.approx(
        training["cbdm"]["seconds_per_step"] / training["ddpm"]["seconds_per_step"])
    assert written["ratios"]["training_speedup_over_naive"]["value"] == pytest.approx(
        result["naive_training"]["seconds_per_step"] / training["ddpm"]["seconds_per_step"])
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in written["ratios"].values())
    assert result["compute"]["flops_per_ddpm_step"] > 0 and result["compute"]["mfu_vs_bf16_peak"] is None
    assert set(result["sampling"]) == {"ddpm1000_batched", "ddpm1000_two_pass", "ddim100_batched",
                                       "ddim100_two_pass"}
    assert (tmp_path / "smoke-cpu.csv").read_text().startswith("kind,name,value,target\n")
    for method, figures in written["training_compiled"].items():  # each objective's step, eager vs compiled
        assert figures["graph_breaks"] == 0, method
        assert 0 < figures["kernels_per_step_compiled"] < figures["kernels_per_step_eager"], method
    assert set(written["training_compiled"]) == {"coral"}
    step = written["sampling_step"]  # the sampler's step, eager vs compiled (no CUDA graphs on the CPU)
    assert step["graph_breaks"] == 0 and step["cuda_graphs"] is False and step["sampler"] == "ddim"
    assert 0 < step["kernels_per_step_compiled"] < step["kernels_per_step_eager"]
    assert step["compiled_speedup"] == pytest.approx(step["seconds_per_step_eager"] / step["seconds_per_step_compiled"])


def test_flop_counter_matches_hand_count_for_a_linear_layer():
    # The benchmark's FLOP figures come from torch's counter: 2 * in * out per sample for a matmul.
    from torch.utils.flop_counter import FlopCounterMode
    layer = torch.nn.Linear(8, 4, bias=False)
    with FlopCounterMode(display=False) as counter:
        layer(torch.ones(3, 8))
    assert counter.get_total_flops() == 2 * 3 * 8 * 4


def test_interleaved_seconds_calls_each_function_the_expected_number_of_times():
    calls = {"a": 0, "b": 0}

    def count(name):
        calls[name] += 1

    times = interleaved_seconds({"a": lambda: count("a"), "b": lambda: count("b")}, torch.device("cpu"),
                                warmup=2, repeats=3, rounds=4)
    assert calls == {"a": 14, "b": 14} and set(times) == {"a", "b"}


def test_kernels_per_call_counts_a_hand_checkable_function():
    # add, mul, sum: three kernels eagerly (the view launches none); fused into one when compiled
    x = torch.randn(64, 64)
    cpu = torch.device("cpu")
    assert kernels_per_call(lambda: ((x + 1) * 2).view(-1).sum(), cpu) == 3
    assert kernels_per_call(torch.compile(lambda: ((x + 1) * 2).view(-1).sum()), cpu) == 1
    compiled_before = torch.compile(lambda: (x - 1).exp())
    compiled_before()  # its kernels were not recorded when it compiled
    with pytest.raises(ValueError, match="compiled before"):
        kernels_per_call(compiled_before, cpu)


def test_graph_breaks_counts_a_branch_on_a_tensor_value():
    def branch(x):
        y = x + 1
        return y * 2 if y.sum() > 0 else y  # the Python branch needs the value: one break

    x = torch.randn(4)
    assert graph_breaks(branch, x) == 1 and graph_breaks(lambda x: (x + 1) * 2, x) == 0
