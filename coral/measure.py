"""How a step is measured: its seconds per call (interleaved with the steps it is compared with), the
kernels it launches, and its graph breaks under torch.compile; used by the benchmark and the GPU check."""
from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np
import torch
from torch._inductor import config as inductor_config
from torch.profiler import ProfilerActivity, profile


def machine_description(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": device.type}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Mean wall time of fn() after `warmup` untimed calls, waiting for the device at both ends."""
    return interleaved_seconds({"fn": fn}, device, warmup, repeats, rounds=1)["fn"]


def interleaved_seconds(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int,
                        rounds: int) -> dict[str, float]:
    """Seconds per call of each function, measured in alternating rounds of `repeats` calls.

    Alternating keeps slow drifts of the machine (other load, clocks) out of the ratios between
    them; each function's figure is the median over rounds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / repeats)
    return {name: float(np.median(values)) for name, values in times.items()}


# Operators that launch no kernel besides views: allocations, and _unsafe_view (a view its schema does not say).
NO_KERNEL = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::_unsafe_view", "aten::resize_",
             "aten::result_type"}


def _computes(event) -> bool:
    """Whether a profiled CPU event is an operator that computes: a kernel inductor generated for the
    CPU (cpp_fused_*), or an aten operator that is neither a view nor an allocation."""
    name = event.name
    if "cpp_fused" in name:
        return True
    if not name.startswith("aten::") or name in NO_KERNEL:
        return False
    packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
    return packet is None or not getattr(packet, packet.overloads()[0]).is_view


def _launched_by_caller(event) -> bool:
    """A computing event that no computing event encloses: what the program (or the compiled graph's
    wrapper) itself launched; an operator's inner operators belong to it."""
    if not _computes(event):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if _computes(parent):
            return False
        parent = parent.cpu_parent
    return True


def kernels_per_call(fn: Callable[[], object], device: torch.device, warmup: int = 2) -> int:
    """Kernels one call of fn() launches, counted by torch.profiler after `warmup` calls (a compiled fn
    compiles in the first; on a GPU, CUDA graphs record in the second).

    On CUDA: the host's kernel and CUDA-graph launches (cudaLaunchKernel, cuLaunchKernel, cudaGraphLaunch),
    so a replayed graph counts once. On the CPU, the proxy for launch overhead: the operators the program
    calls (aten operators that compute, each counted once with what runs inside it; views and allocations
    left out) plus, in compiled code, each kernel inductor generated; a fn compiled before this call
    raises, since only kernels compiled here are recorded (inductor's cpp.enable_kernel_profile).
    E.g. lambda: ((x + 1) * 2).sum() launches 3 eagerly, 1 compiled on the CPU.
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        for _ in range(warmup):
            fn()
        synchronize(device)
        with profile(activities=activities) as prof:
            fn()
            synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        return sum("LaunchKernel" in e.name or "GraphLaunch" in e.name for e in events)
    if any(e.name.startswith("Torch-Compiled Region") for e in events) and not any("cpp_fused" in e.name
                                                                                  for e in events):
        raise ValueError("kernels_per_call: fn was compiled before; its generated kernels are not recorded")
    return sum(_launched_by_caller(e) for e in events)


def graph_breaks(fn: Callable, *args) -> int:
    """Graph breaks torch.compile makes in fn(*args) (torch._dynamo.explain; 0: one graph). explain
    resets torch.compile's caches: call it before compiling what is timed."""
    return torch._dynamo.explain(fn)(*args).graph_break_count
