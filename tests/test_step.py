"""One optimisation step (coral.step): the eager step is today's step written out by hand, bit for bit;
the compiled step has no graph break and gives the eager weights; micro-batches give the whole batch's."""
import functools

import pytest
import torch

from coral.config import load
from coral.grid import run_config
from coral.diffusion import Diffusion
from coral.objectives import build_objective
from coral.sections import TrainConfig
from coral.step import build_training, draw_batch, learning_rate, training_step

OBJECTIVES = ["ddpm", "cbdm", "t2h", "coral", "coral_ambient"]
BATCH, STEPS = 16, 10
COUNTS = torch.arange(10, 0, -1)  # a long-tailed prior over 10 classes
# Weights after 10 steps of Adam (lr 5e-4: at most 5e-3 from where they started) in fp32 without dropout:
# a compiled or micro-batched step sums in another order, which Adam's normalisation carries into the
# updates of weights whose gradients are near 0; the EMA averages it away. Measured: 1.7e-5 and 3.2e-7.
WEIGHTS_ATOL, EMA_ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def smoke():
    return load("config.yaml", preset="smoke")


def exact(smoke, method, **train):
    """The smoke run of `method` without dropout, in fp32: what another way of computing a step reproduces
    up to rounding."""
    run = run_config(smoke, "animals-rho0.1", method, 0)
    run["model"] = {**run["model"], "dropout": 0.0}
    run["train"] = {**run["train"], "bf16_autocast": False, **train}
    return run


def data(steps=STEPS):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (steps * BATCH, 1, 8, 8), dtype=torch.uint8, generator=generator)
    return images, torch.arange(steps * BATCH) % 10  # every class in every batch: SupCon has positives


def trained(run, steps=STEPS, compile_cache=None):
    """The training setup after `steps` steps from seed 0, on fixed batches."""
    torch.manual_seed(0)
    setup = build_training(run, COUNTS, 1, 10, torch.device("cpu"), compile_cache=compile_cache)
    images, labels = data(steps)
    torch.manual_seed(1)
    for step in range(steps):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        training_step(setup, images[batch], labels[batch], run, step)
    return setup


def max_differences(a, b) -> dict:
    return {name: max([float((x - y).abs().max()) for x, y in zip(getattr(a, name).state_dict().values(),
                                                                getattr(b, name).state_dict().values())] or [0.0])
            for name in ("model", "objective", "ema")}


def train_config(smoke, method="ddpm") -> TrainConfig:
    return TrainConfig.of(run_config(smoke, "animals-rho0.1", method, 0)["train"], "train")


def test_the_learning_rate_is_torchs_linear_warm_up_to_the_bit(smoke):
    tcfg = train_config(smoke)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tcfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(s, tcfg.warmup) / tcfg.warmup)
    for step in range(2 * tcfg.warmup):
        assert learning_rate(tcfg, step) == optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    assert learning_rate(tcfg, 0) == 0.0 and learning_rate(tcfg, tcfg.warmup) == tcfg.lr


def test_the_eager_step_is_the_step_written_out_by_hand(smoke):
    """The default eager step (bf16 autocast, dropout 0.1; here with flips and CBDM's draw too) is, to the
    bit: draw flips, t, noise, the label coin and y' in this order; the loss; clip; Adam; EMA."""
    run = run_config(smoke, "animals-rho0.1", "cbdm", 0)
    run["data"] = {**run["data"], "hflip": True}
    images, labels = data(3)
    torch.manual_seed(0)
    setup = build_training(run, COUNTS, 1, 10, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_training(run, COUNTS, 1, 10, torch.device("cpu")).model  # the same initial weights
    ema = [p.detach().clone() for p in model.parameters()]
    objective = setup.objective
    adam = torch.optim.Adam(model.parameters(), lr=run["train"]["lr"], foreach=True)
    tcfg = setup.config
    torch.manual_seed(1)
    for step in range(3):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        state = torch.get_rng_state()
        training_step(setup, images[batch], labels[batch], run, step)
        after = torch.get_rng_state()
        torch.set_rng_state(state)  # the hand-written step from the same generator state
        x0, y = images[batch].float() / 127.5 - 1.0, labels[batch]
        x0 = torch.where(torch.rand(BATCH, 1, 1, 1) < 0.5, x0.flip(-1), x0)
        t = torch.randint(0, 1000, (BATCH,))
        noise = torch.randn_like(x0)
        y_in = torch.where((torch.rand(1) < tcfg.p_uncond).expand_as(y), torch.full_like(y, -1), y)
        y_prime = torch.multinomial(COUNTS.float() / COUNTS.sum(), BATCH, replacement=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective(model, x0, y, y_in, t, noise, y_prime=y_prime)["loss"]
        adam.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), tcfg.grad_clip)
        adam.param_groups[0]["lr"] = tcfg.lr * (min(step, tcfg.warmup) / tcfg.warmup)
        adam.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.lerp_(p, 1.0 - tcfg.ema_decay)
        assert torch.equal(torch.get_rng_state(), after)
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(setup.model.named_parameters())[name]), name
    for e, p in zip(ema, setup.ema.parameters()):
        assert torch.equal(e, p)


@pytest.mark.parametrize("method", OBJECTIVES)
def test_the_compiled_pieces_have_no_graph_break(smoke, method):
    """The loss (forward; its backward is AOTAutograd's of the same graph) and the update (clipping, Adam,
    EMA) each trace to one graph."""
    run = exact(smoke, method)
    setup = build_training(run, COUNTS, 1, 10, torch.device("cpu"))
    images, labels = data(1)
    batch = draw_batch(images, labels, setup.objective, setup.config, hflip=False)
    for piece, args in ((setup.loss, batch.inputs()), (setup.update, ())):
        explained = torch._dynamo.explain(piece)(*args)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


# Inductor generates the code of one objective, CORAL's (the largest graph: UNet, projection head and SupCon);
# the others run AOTAutograd's graphs eagerly (backend "aot_eager"): the same capture, functionalisation and
# backward that Inductor compiles, without the minutes of C++ code generation each on a CPU.
INDUCTOR = {"coral"}


@pytest.mark.slow
@pytest.mark.parametrize("method", OBJECTIVES)
def test_the_compiled_step_gives_the_eager_weights(smoke, method, monkeypatch, tmp_path):
    backend = "inductor" if method in INDUCTOR else "aot_eager"
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    eager = trained(exact(smoke, method))
    compiled = trained(exact(smoke, method, compile=True), compile_cache=tmp_path)
    differences = max_differences(eager, compiled)
    assert differences["model"] < WEIGHTS_ATOL and differences["objective"] < WEIGHTS_ATOL, differences
    assert differences["ema"] < EMA_ATOL, differences


@pytest.mark.parametrize("method", ["ddpm", "coral"])
def test_micro_batches_give_the_whole_batch_weights(smoke, method):
    """train.micro_batch_size 4 of a batch of 16; CORAL's SupCon still covers the whole batch (the gradient cache)."""
    differences = max_differences(trained(exact(smoke, method)), trained(exact(smoke, method, micro_batch_size=4)))
    assert differences["model"] < WEIGHTS_ATOL and differences["objective"] < WEIGHTS_ATOL, differences
    assert differences["ema"] < EMA_ATOL, differences


def test_the_gradient_cache_gives_the_whole_batch_gradient(smoke):
    """One step's gradient of CORAL in micro-batches of 4 is the whole batch's up to rounding, and its
    logged terms are the whole batch's."""
    runs = {size: exact(smoke, "coral", micro_batch_size=size) for size in (0, 4)}
    images, labels = data(1)
    grads, terms = {}, {}
    for size, run in runs.items():
        torch.manual_seed(0)
        setup = build_training(run, COUNTS, 1, 10, torch.device("cpu"))
        setup.update = lambda: torch.zeros(())  # keep the gradient, skip the update
        torch.manual_seed(1)
        terms[size] = training_step(setup, images, labels, run, step=5)
        grads[size] = torch.cat([p.grad.flatten() for p in setup.params])
    relative = ((grads[4] - grads[0]).norm() / grads[0].norm()).item()
    assert relative < 1e-5, relative
    for name in ("loss", "mse", "supcon", "coral_term"):
        assert terms[4][name].item() == pytest.approx(terms[0][name].item(), rel=1e-5), name


def test_t2h_targets_are_drawn_with_the_batch_and_sliced_with_it(smoke):
    """T2H's draws (targets, transferred) are per sample: a slice of a drawn batch holds its samples' draws."""
    objective = build_objective("t2h", {"mode": "full"}, Diffusion(), COUNTS, None)
    images, labels = data(1)
    torch.manual_seed(2)
    batch = draw_batch(images, labels, objective, train_config(smoke, "t2h"), hflip=False)
    assert set(batch.drawn) == {"targets", "transferred"} and batch.drawn["targets"].shape == batch.x0.shape
    part = batch.part(4, 8)
    assert torch.equal(part.drawn["targets"], batch.drawn["targets"][4:12])
    kept = ~part.drawn["transferred"]
    assert torch.equal(part.drawn["targets"][kept], part.noise[kept])  # an untransferred target is the noise
