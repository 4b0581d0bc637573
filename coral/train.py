"""Training loop: the steps of coral.step, atomic step checkpoints, automatic resume, on one device or
on train.devices processes (started by coral.distributed, each running rank_main), where rank 0 writes
everything.

Run directory layout:
    config.json     the resolved run config
    stats.jsonl     one line of per-term losses every train.log_every steps
    checkpoints/    step-<N>.pt, the newest train.keep_checkpoints kept
    compile_cache/  Inductor's compiled kernels with train.compile (a resumed job reuses them)
    final.pt        EMA + raw weights and the config, written last
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from coral import checkpoint, distributed, identity, lineage, reuse
from coral.batches import DeviceBatches
from coral.data import load_split
from coral.deadline import Deadline, OutOfTime
from coral.io import atomic_path, exclusive, provenance, sha256_file, write_json
from coral.jobs import setup_job
from coral.progress import Progress
from coral.ranks import ONE, Ranks
from coral.sections import TrainConfig
from coral.step import build_training, learning_rate, load_optimizer, training_step
from coral.tensorboard_log import TensorBoardLog
from coral.tensors import default_device

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train(run_cfg: dict, split_path: str | Path, run_dir: str | Path, time_budget: float | None = None) -> Path:
    """Train one run and write run_dir/final.pt: the kept model of the same identity and training set
    when there is one (coral.reuse), else resuming from the newest step checkpoint of this identity.

    Stops with OutOfTime after saving a checkpoint when the job's deadline nears (coral.deadline:
    `time_budget` seconds, or the SLURM time limit); running it again continues. One job at a time per
    run directory (Locked otherwise); with train.devices > 1 the job trains in that many processes
    (coral.distributed).
    """
    run_dir = Path(run_dir)
    run_cfg = identity.plain(run_cfg)
    with exclusive(run_dir / ".lock", f"run directory {run_dir}"):
        if reuse.restore([run_dir / "final.pt"], identity.run(run_cfg), [split_path]):
            if run_cfg["train"]["prune_after_final"]:  # left by a job stopped at its time limit
                checkpoint.prune(run_dir / "checkpoints", 0)
            return run_dir / "final.pt"
        if run_cfg["train"]["devices"] > 1:
            outcome = distributed.launch(run_cfg, split_path, run_dir, time_budget)
            if outcome["status"] == "out_of_time":
                raise OutOfTime(outcome["message"])
            if outcome["status"] == "diverged":
                raise TrainingDiverged(outcome["message"])
            return run_dir / "final.pt"
        return training_loop(run_cfg, split_path, run_dir, time_budget)


def training_loop(run_cfg: dict, split_path: str | Path, run_dir: Path, time_budget: float | None,
                  device: torch.device | None = None, ranks: Ranks = ONE) -> Path:
    """The training loop of this process: the whole run, or one rank of it (coral.distributed)."""
    job_start = time.perf_counter()
    tcfg, seed = TrainConfig.of(run_cfg["train"], "train"), run_cfg["run"]["seed"]
    device = device or default_device()
    main = ranks.main

    split = load_split(split_path)  # a missing or damaged split stops here, before any output
    images = split.images.to(device)  # uint8, resident
    labels = torch.from_numpy(split.labels).to(device)
    if main:
        _log_header(run_cfg, device, ranks.world)
        log.info("data: %d training images of %d classes (%s), %s px, %d channel(s), from %s", len(images),
                 len(split.class_names), _format_counts(split.class_counts), "x".join(map(str, images.shape[2:])),
                 images.shape[1], split_path)
    if len(images) < tcfg.batch_size:
        raise ValueError(f"train.batch_size: {tcfg.batch_size} exceeds the {len(images)} training images")

    run_identity, inputs = identity.run(run_cfg), {"split": sha256_file(split_path)}
    torch.manual_seed(seed)
    setup = build_training(run_cfg, torch.from_numpy(split.class_counts), images.shape[1], len(split.class_names),
                           device, ranks, compile_cache=run_dir / "compile_cache")
    model, ema, objective, optimizer = setup.model, setup.ema, setup.objective, setup.optimizer

    start = 0
    resumed = None  # rank 0 chooses the checkpoint (and sets aside those of another identity)
    if main:
        resumed = checkpoint.resume_point(run_dir / "checkpoints", run_identity, inputs,
                                          lambda state: identity.of_checkpoint("train", state))
    path = ranks.from_main(resumed[0] if resumed else None)
    if path is not None:
        state = resumed[1] if main else checkpoint.load(path)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        objective.load_state_dict(state["objective"])
        load_optimizer(optimizer, state["optimizer"])
        checkpoint.restore_rng(state, device)
        start = state["step"]
        if main:
            log.info("resuming %s from step %d (%s)", run_dir, start, path.name)
    elif main:
        log.info("starting %s at step 0 (no step checkpoint to resume from)", run_dir)
    board = None
    if main:
        log.info("schedule: %d steps of batch size %d%s, this job from step %d; a stats line every %d steps, a "
                 "checkpoint every %d", tcfg.steps, tcfg.batch_size, _batch_split(tcfg), start, tcfg.log_every,
                 tcfg.checkpoint_every)
        write_json(run_dir / "config.json", {"config": run_cfg, "provenance": provenance()})
        _truncate_stats(run_dir / "stats.jsonl", start)
        if tcfg.tensorboard_every:
            board = TensorBoardLog(run_dir / "tensorboard", tcfg.tensorboard_every, setup.diffusion,
                                   tuple(images.shape[1:]), len(split.class_names), tcfg.bf16_autocast)

    def snapshot(step: int) -> dict:
        state = {"step": step, "config": run_cfg, "identity": run_identity, "inputs": inputs,
                 "in_channels": images.shape[1], "class_names": split.class_names,
                 "model": model.state_dict(), "ema": ema.state_dict(), "objective": objective.state_dict(),
                 "optimizer": optimizer.state_dict(), **checkpoint.rng_states(device)}
        return state

    model.train()
    batches = DeviceBatches(len(images), tcfg.batch_size, seed, device)
    sums: dict[str, torch.Tensor] = {}
    accumulated = 0  # steps in `sums`
    tick = loop_start = time.perf_counter()
    last_record, last_window = None, None  # this job's newest stats line (values already on the host), its steps
    # Measured as they happen; until the first save, a checkpoint (weights, EMA, two Adam moments)
    # written at a cautious 100 MB/s.
    state_bytes = 4 * sum(p.numel() * p.element_size() for p in setup.params)
    step_seconds, save_seconds = 0.0, 1.0 + state_bytes / 100e6
    progress = Progress(range(start, tcfg.steps), initial=start, total=tcfg.steps, desc=f"train {run_dir}",
                        unit="step", dynamic_ncols=True, disable=not main)
    with Deadline.for_this_job(time_budget) as deadline:
        for step in progress:
            step_start = time.perf_counter()
            idx = batches(step)
            terms = training_step(setup, images[idx], labels[idx], run_cfg, step)
            for name, value in terms.items():  # accumulated on-device: no host sync between log steps
                sums[name] = sums.get(name, 0) + value.detach().float()
            accumulated += 1

            done = step + 1
            if done % tcfg.log_every == 0 or done == tcfg.steps:
                record = {"step": done, "lr": learning_rate(tcfg, done)}
                record.update({name: float(total) / accumulated for name, total in _over_ranks(sums, ranks).items()})
                now = time.perf_counter()
                record["img_per_s"] = accumulated * tcfg.batch_size / (now - tick)
                step_seconds = (now - tick) / accumulated
                last_window = (done - accumulated + 1, done)
                tick, sums, accumulated = now, {}, 0
                if not math.isfinite(record["loss"]):  # the same record on every rank: all stop
                    last = checkpoint.step_checkpoints(run_dir / "checkpoints")
                    raise TrainingDiverged(f"loss is {record['loss']} at step {done}; kept the last good checkpoint "
                                           f"{last[-1] if last else '(none yet)'}")
                last_record = record
                if main:
                    with open(run_dir / "stats.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    if board is not None:
                        board.scalars(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", img_per_s=f"{record['img_per_s']:.0f}", refresh=False)
            out_of_time = done < tcfg.steps and ranks.any(deadline.must_stop(
                2 * max(step_seconds, time.perf_counter() - step_start) + save_seconds))
            if board is not None:
                board.grid(done, ema)
            if main and (done % tcfg.checkpoint_every == 0 or done == tcfg.steps or out_of_time):
                save_start = time.perf_counter()
                checkpoint.save(checkpoint.step_path(run_dir / "checkpoints", done), snapshot(done))
                checkpoint.prune(run_dir / "checkpoints", tcfg.keep_checkpoints)
                save_seconds = time.perf_counter() - save_start
            if out_of_time:
                progress.close()
                raise OutOfTime(f"{run_dir}: stopped at step {done} of {tcfg.steps} before the job's time limit; "
                                f"saved a checkpoint, run the job again to continue")

        if not main:
            return run_dir / "final.pt"
        if board is not None:
            board.close()
        final = snapshot(tcfg.steps)
        for key in ("optimizer", "rng_cpu", "rng_cuda"):
            final.pop(key, None)
        final["provenance"] = provenance()
        checkpoint.save(run_dir / "final.pt", final)
        # A job past its time limit may be counted failed (SLURM: TIMEOUT) and its final.pt deleted by
        # Snakemake: then the step checkpoints let the next job rewrite it at once.
        if tcfg.prune_after_final and not deadline.must_stop(0):
            checkpoint.prune(run_dir / "checkpoints", 0)
            shutil.rmtree(run_dir / "compile_cache", ignore_errors=True)
        elif tcfg.prune_after_final:
            log.warning("%s: kept the step checkpoints, this job is at its time limit", run_dir)
    lineage.record([run_dir / "final.pt"], "train", [split_path], run_cfg, run_identity)
    reuse.keep([run_dir / "final.pt"], run_identity)
    _log_summary(run_dir, tcfg, start, last_record, last_window, tick - loop_start, time.perf_counter() - job_start)
    return run_dir / "final.pt"


def _format_counts(counts) -> str:
    counts = [int(c) for c in counts]
    return f"{max(counts)} to {min(counts)} per class"


def _over_ranks(sums: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """Each rank's sums of its shares' loss terms -> their means over the ranks (the global batch's)."""
    if ranks.world == 1:
        return sums
    return dict(zip(sums, ranks.mean(torch.stack(list(sums.values()))).unbind()))


def _batch_split(tcfg: TrainConfig) -> str:
    """How a step's batch is split, for the log: over the processes, into micro-batches."""
    parts = [f"{tcfg.batch_size // tcfg.devices} per process"] if tcfg.devices > 1 else []
    if tcfg.micro_batch_size:
        parts.append(f"in micro-batches of {tcfg.micro_batch_size}")
    return f" ({', '.join(parts)})" if parts else ""


def _log_header(run_cfg: dict, device: torch.device, processes: int) -> None:
    """The first lines of a training job's log: which run, on what, with which training config."""
    run = run_cfg["run"]
    log.info("train run %s/%s/seed%s: method %s, dataset %s, rho %s", run["setting"], run["variant"], run["seed"],
             run["method"], run["dataset"], run["rho"])
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    log.info("device %s%s, torch %s, %d CPU thread(s), %s", device, gpu, torch.__version__, torch.get_num_threads(),
             "1 process" if processes == 1 else f"{processes} processes (DDP, one per device; this is rank 0)")
    log.info("train config: %s", json.dumps(run_cfg["train"], sort_keys=True))
    objective = run_cfg["objective"]
    log.info("objective %s: %s", objective["name"], json.dumps(objective["hparams"], sort_keys=True))


def _log_summary(run_dir: Path, tcfg: TrainConfig, start: int, last: dict | None, window: tuple[int, int] | None,
                 loop_seconds: float, wall_seconds: float) -> None:
    """The last lines of a finished training job's log, from values the log steps already brought to the host.

    last: this job's newest stats line and window the steps it averages; None when this job trained no
    step (it resumed at the last one), then the newest line of stats.jsonl.
    """
    if last is None:
        path = run_dir / "stats.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        last = json.loads(lines[-1]) if lines else None
        if last is not None:
            window = ((last["step"] - 1) // tcfg.log_every * tcfg.log_every + 1, last["step"])
    trained = tcfg.steps - start
    loss = "n/a" if last is None else f"{last['loss']:.5g} (mean over steps {window[0]}-{window[1]})"
    rate = f"{trained * tcfg.batch_size / loop_seconds:.1f} img/s" if trained and loop_seconds > 0 else "n/a"
    log.info("finished at step %d of %d: final loss %s", tcfg.steps, tcfg.steps, loss)
    log.info("this job trained steps %d to %d (%d steps) at a mean %s; wall time %.1f s", start, tcfg.steps, trained,
             rate, wall_seconds)
    log.info("final model written to %s", run_dir / "final.pt")


def _truncate_stats(path: Path, step: int) -> None:
    """Drop stats lines past `step`, written before an interruption, so a resumed log has no duplicates."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))


def rank_main(argv: list[str] | None = None) -> None:
    """One rank of a run on several devices (`python -m coral.train ARGUMENTS.json`, started by
    coral.distributed.launch): joins the process group and runs the training loop on its device."""

    arguments = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    setup_job(arguments["log"], arguments["threads"], append=True, level=logging.INFO if rank == 0 else logging.WARNING)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        host = dist.new_group(backend="gloo")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
        host = dist.group.WORLD
    outcome = {"status": "finished", "message": ""}
    try:
        try:
            training_loop(arguments["run_cfg"], arguments["split"], Path(arguments["run_dir"]),
                          arguments["time_budget"], device, Ranks(rank, world, host))
        except OutOfTime as err:
            outcome = {"status": "out_of_time", "message": str(err)}
        except TrainingDiverged as err:
            outcome = {"status": "diverged", "message": str(err)}
        # Every rank stops at the same step; they leave together, once rank 0 has saved, so that none tears
        # its connections down while another still uses them.
        dist.barrier(group=host)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(arguments["outcome"]).write_text(json.dumps(outcome))


if __name__ == "__main__":
    rank_main()
