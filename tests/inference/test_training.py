"""Training (fit, schedule, best-epoch keeping, resume) and atomic checkpoints."""

from __future__ import annotations

import math
import random
import sys

import numpy as np
import pytest
import torch

from alternators_ppl.inference import checkpoint as checkpoint_module
from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.inference.training import (
    History,
    NonFiniteLossError,
    fit,
    validation_loss,
    warmup_cosine,
)
from alternators_ppl.models import Alternator

OBS, LAT = 3, 2


def make_model(init_seed: int = 123) -> Alternator:
    """A tiny model whose initial weights depend only on ``init_seed``."""
    torch.manual_seed(init_seed)
    return Alternator(OBS, LAT, hidden=(8,)).double()


def toy_data(batch: int = 12, steps: int = 16, seed: int = 3):
    """Learnable toy problem: rotating 2-d latents, observations a noisy linear map of them."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(steps, dtype=torch.float64)
    phase = torch.rand(batch, 1, generator=gen, dtype=torch.float64) * 2 * math.pi
    z = torch.stack([torch.sin(0.5 * t + phase), torch.cos(0.5 * t + phase)], dim=-1)
    weight = torch.randn(LAT, OBS, generator=gen, dtype=torch.float64)
    x = 0.5 * z @ weight + 0.05 * torch.randn(batch, steps, OBS, generator=gen, dtype=torch.float64)
    return x, z


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def history_without_timing(history: History) -> dict:
    record = history.to_dict()
    record.pop("epoch_seconds")
    return record


KW = dict(lr=3e-2, batch_size=4, seed=1, progress=False, warmup_epochs=2, lr_min=1e-3)
# these tests check the training loop itself: Eq. 12 on the data as given (no alpha selection)
KW["supervised"] = "teacher-forcing"


# ----------------------------------------------------------------------------- learning rate


def test_warmup_cosine_closed_form():
    epochs, warmup, lr, lr_min = 12, 3, 0.1, 0.004
    factor = warmup_cosine(epochs, warmup, lr, lr_min)
    assert factor(0) == pytest.approx(1 / warmup)
    assert factor(1) == pytest.approx(2 / warmup)
    assert factor(warmup - 1) == pytest.approx(1.0)  # end of warm-up: the peak
    assert factor(warmup) == pytest.approx(1.0)  # cosine starts at the peak
    assert factor(epochs - 1) == pytest.approx(lr_min / lr)  # last epoch: lr_min
    values = [factor(e) for e in range(epochs)]
    assert max(values) == pytest.approx(1.0)
    rising, falling = values[: warmup + 1], values[warmup:]
    assert all(a <= b + 1e-12 for a, b in zip(rising[:-1], rising[1:], strict=True))
    assert all(a >= b - 1e-12 for a, b in zip(falling[:-1], falling[1:], strict=True))
    assert min(values[warmup:]) == pytest.approx(lr_min / lr)


def test_fit_learns_and_follows_schedule():
    x, z = toy_data()
    model = make_model()
    before = validation_loss(model, x, z, torch.ones(x.shape, dtype=torch.bool), 16, 0)
    epochs = 25
    kw = {**KW, "warmup_epochs": 4}
    history = fit(model, x, z, epochs=epochs, **kw)

    assert isinstance(history, History)
    for values in (history.train_loss, history.lr, history.epoch_seconds):
        assert len(values) == epochs
    assert history.val_loss == []  # no validation data
    assert all(math.isfinite(v) for v in history.train_loss)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    after = validation_loss(model, x, z, torch.ones(x.shape, dtype=torch.bool), 16, 0)
    assert after < 0.5 * before
    # without validation data the best epoch is picked by the training loss
    assert history.best_loss == min(history.train_loss)
    assert history.train_loss[history.best_epoch - 1] == history.best_loss

    factor = warmup_cosine(epochs, 4, kw["lr"], kw["lr_min"])
    expected = [kw["lr"] * factor(e) for e in range(epochs)]
    assert history.lr == pytest.approx(expected, rel=1e-12)
    assert history.lr[0] == pytest.approx(kw["lr"] / 4)
    assert max(history.lr) == pytest.approx(kw["lr"])
    assert history.lr[-1] == pytest.approx(kw["lr_min"])
    assert history.to_dict()["lr"] == history.lr


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_weights_different_seed_different():
    x, z = toy_data()
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        model = make_model()
        torch.manual_seed(1000 + len(runs))  # global state before fit must not matter
        history = fit(model, x, z, epochs=3, **{**KW, "seed": seed})
        runs[name] = (state_of(model), history)
    assert same_state(runs["a"][0], runs["b"][0])
    assert runs["a"][1].train_loss == runs["b"][1].train_loss
    assert not same_state(runs["a"][0], runs["c"][0])
    assert runs["a"][1].train_loss != runs["c"][1].train_loss


@pytest.mark.parametrize("supervised", [True, False])
def test_resume_equals_uninterrupted_run(tmp_path, supervised):
    x, z = toy_data()
    x_val, z_val = toy_data(batch=6, seed=4)
    if not supervised:
        z = z_val = None
    kw = {**KW, "epochs": 6}

    straight = make_model()
    h_straight = fit(straight, x, z, x_val, z_val, checkpoint_dir=tmp_path / "a", **kw)

    stopped = make_model()
    h_stopped = fit(
        stopped,
        x,
        z,
        x_val,
        z_val,
        checkpoint_dir=tmp_path / "b",
        callback=lambda epoch, history: epoch == 3,
        **kw,
    )
    assert len(h_stopped.train_loss) == 3
    assert load_checkpoint(tmp_path / "b" / "last.pt", make_model())["epoch"] == 3

    torch.manual_seed(999)  # a fresh model with other weights and another global RNG state
    fresh = Alternator(OBS, LAT, hidden=(8,)).double()
    h_resumed = fit(fresh, x, z, x_val, z_val, checkpoint_dir=tmp_path / "b", resume=True, **kw)

    assert same_state(state_of(straight), state_of(fresh))
    assert history_without_timing(h_straight) == history_without_timing(h_resumed)
    assert len(h_resumed.epoch_seconds) == 6
    # the weights after the final epoch (not just the best ones) agree as well
    last_a, last_b = make_model(), make_model()
    assert load_checkpoint(tmp_path / "a" / "last.pt", last_a)["epoch"] == 6
    assert load_checkpoint(tmp_path / "b" / "last.pt", last_b)["epoch"] == 6
    assert same_state(state_of(last_a), state_of(last_b))


# ----------------------------------------------------------------------------- best epoch


@pytest.mark.parametrize("with_dir", [True, False])
def test_returned_model_holds_best_epoch_weights(tmp_path, with_dir):
    x, z = toy_data()
    x_val, z_val = toy_data(batch=6, seed=4)
    snapshots = {}

    def callback(epoch, history):
        snapshots[epoch] = state_of(model)
        if epoch == 3:  # wreck the weights: later epochs validate worse than epoch <= 3
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(5.0 * torch.randn_like(p))

    model = make_model()
    ckpt_dir = tmp_path if with_dir else None
    history = fit(
        model, x, z, x_val, z_val, epochs=5, checkpoint_dir=ckpt_dir, callback=callback, **KW
    )
    assert len(history.val_loss) == 5
    assert history.best_loss == min(history.val_loss)
    assert history.val_loss[history.best_epoch - 1] == history.best_loss
    assert history.best_epoch <= 3 < len(history.val_loss)

    returned = state_of(model)
    assert same_state(returned, snapshots[history.best_epoch])
    assert not same_state(returned, snapshots[5])
    assert not model.training  # returned in eval mode
    if not with_dir:
        return
    best = make_model(init_seed=5)
    extra = load_checkpoint(tmp_path / "best.pt", best, restore_rng=False)
    assert extra["epoch"] == history.best_epoch
    assert same_state(returned, state_of(best))


# ----------------------------------------------------------------------------- failures


def test_non_finite_loss_raises_and_keeps_last_checkpoint(tmp_path):
    x, z = toy_data()
    model = make_model()

    def poison(epoch, history):
        if epoch == 2:
            with torch.no_grad():
                next(model.parameters())[0].fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"epoch 3\b") as info:
        fit(model, x, z, epochs=5, checkpoint_dir=tmp_path, callback=poison, **KW)
    assert isinstance(info.value, FloatingPointError)
    assert "last.pt" in str(info.value)

    restored = make_model(init_seed=9)
    extra = load_checkpoint(tmp_path / "last.pt", restored, restore_rng=False)
    assert extra["epoch"] == 2
    assert len(extra["history"]["train_loss"]) == 2
    assert all(torch.isfinite(p).all() for p in restored.parameters())
    assert not any(path.name.endswith(".tmp") for path in tmp_path.iterdir())


def test_non_finite_gradient_never_reaches_weights_or_checkpoints(tmp_path):
    """A finite loss with a NaN gradient must not write NaN weights into last.pt / best.pt."""
    x, z = toy_data()
    model = make_model()
    poisoned = {"on": False}
    next(model.parameters()).register_hook(lambda g: g * math.nan if poisoned["on"] else g)

    def poison(epoch, history):
        poisoned["on"] = epoch == 2

    with pytest.raises(NonFiniteLossError, match=r"gradient norm is nan at epoch 3\b"):
        fit(
            model,
            x,
            z,
            epochs=5,
            checkpoint_dir=tmp_path,
            callback=poison,
            **{**KW, "batch_size": 16},
        )  # one batch per epoch: the bad step ends epoch 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for name, epoch in (("last.pt", 2), ("best.pt", None)):
        restored = make_model(init_seed=9)
        extra = load_checkpoint(tmp_path / name, restored, restore_rng=False)
        assert epoch is None or extra["epoch"] == epoch
        assert all(torch.isfinite(p).all() for p in restored.parameters())


def test_non_finite_validation_loss_raises(tmp_path):
    x, z = toy_data()
    x_val, z_val = toy_data(batch=4, seed=5)
    x_val[0, 0, 0] = 1e300  # finite input whose squared error overflows
    with pytest.raises(NonFiniteLossError, match=r"validation loss is inf at epoch 1\b"):
        fit(make_model(), x, z, x_val, z_val, epochs=3, checkpoint_dir=tmp_path, **KW)
    assert not (tmp_path / "best.pt").exists()


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    model = make_model()
    path = tmp_path / "sub" / "ckpt.pt"
    assert save_checkpoint(path, model, epoch=1) == path
    save_checkpoint(path, model, epoch=2)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    original = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial checkpoint bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model, epoch=3)
    monkeypatch.undo()

    assert path.read_bytes() == original
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path, make_model(), restore_rng=False)["epoch"] == 2


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt", make_model())


@pytest.mark.parametrize("restore_rng", [True, False])
def test_load_checkpoint_restores_rng(tmp_path, restore_rng):
    model = make_model()
    path = save_checkpoint(tmp_path / "rng.pt", model)
    after_save = (torch.randn(4), np.random.rand(3), random.random())
    for _ in range(3):  # move every generator on
        torch.randn(10), np.random.rand(10), random.random()
    load_checkpoint(path, model, restore_rng=restore_rng)
    again = (torch.randn(4), np.random.rand(3), random.random())
    assert torch.equal(after_save[0], again[0]) == restore_rng
    assert np.array_equal(after_save[1], again[1]) == restore_rng
    assert (after_save[2] == again[2]) == restore_rng


# ----------------------------------------------------------------------------- arguments


def _bad_cases():
    x, z = toy_data(batch=4, steps=5)
    x_inf = x.clone()
    x_inf[0, 0, 0] = float("inf")
    z_nan = z.clone()
    z_nan[1, 2, 0] = float("nan")
    return [
        ("epochs", dict(epochs=0), ValueError),
        ("lr", dict(lr=-1.0), ValueError),
        ("lr", dict(lr=float("nan")), ValueError),
        ("batch_size", dict(batch_size=0), ValueError),
        ("lr_min", dict(lr=1e-3, lr_min=1e-2), ValueError),
        ("x_train", dict(x_train=x[0]), ValueError),
        ("x_train", dict(x_train=x[..., :2]), ValueError),
        ("x_train", dict(x_train=x_inf), ValueError),
        ("x_train", dict(x_train=torch.ones(4, 5, OBS, dtype=torch.int64)), TypeError),
        ("z_train", dict(z_train=z[:, :-1]), ValueError),
        ("z_train", dict(z_train=z_nan), ValueError),
        ("resume", dict(resume=True), ValueError),
    ]


@pytest.mark.parametrize("name,override,error", _bad_cases())
def test_bad_arguments_name_the_argument(name, override, error):
    x, z = toy_data(batch=4, steps=5)
    model = make_model()
    before = state_of(model)
    kwargs = dict(x_train=x, z_train=z, epochs=2, lr=1e-2, batch_size=4, progress=False)
    kwargs.update(override)
    with pytest.raises(error, match=name):
        fit(model, **kwargs)
    assert same_state(before, state_of(model))  # nothing was trained


# ----------------------------------------------------------------------------- progress, missing


def test_progress_false_prints_nothing(capsys, monkeypatch):
    x, z = toy_data(batch=4, steps=5)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as if run in a terminal
    fit(make_model(), x, z, epochs=2, **{**KW, "progress": False})
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""
    fit(make_model(), x, z, epochs=2, **{**KW, "progress": True})
    assert "fit" in capsys.readouterr().err  # the bar does show when asked for


def test_missing_data_nan_and_mask():
    x, z = toy_data()
    gen = torch.Generator().manual_seed(11)
    observed = torch.rand(x.shape[:2], generator=gen) > 0.3  # (B, T), True = observed
    x_nan = x.masked_fill(~observed.unsqueeze(-1), float("nan"))
    x_junk = x.masked_fill(~observed.unsqueeze(-1), 1e3)  # garbage where the mask hides it

    by_nan, by_mask = make_model(), make_model()
    h_nan = fit(by_nan, x_nan, epochs=3, **KW)
    h_mask = fit(by_mask, x_junk, epochs=3, mask_train=observed, **KW)
    assert all(math.isfinite(v) for v in h_nan.train_loss)
    assert all(torch.isfinite(p).all() for p in by_nan.parameters())
    assert not same_state(state_of(by_nan), state_of(make_model()))  # it did train
    # NaN entries and masked-out entries are the same missing data
    assert h_nan.train_loss == h_mask.train_loss
    assert same_state(state_of(by_nan), state_of(by_mask))

    # supervised, with NaN in x and a per-entry mask and validation data with NaN as well
    entry_mask = torch.rand(x.shape, generator=gen) > 0.2
    x_val, z_val = toy_data(batch=4, seed=5)
    x_val[0, 3] = float("nan")
    history = fit(
        make_model(),
        x_nan,
        z,
        x_val,
        z_val,
        epochs=2,
        mask_train=entry_mask & observed.unsqueeze(-1),
        **KW,
    )
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)

    bad_mask = torch.ones(x.shape[:2], dtype=torch.bool)  # marks the NaN entries observed
    with pytest.raises(ValueError, match="mask"):
        fit(make_model(), x_nan, epochs=1, mask_train=bad_mask, **KW)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_fit_on_cuda(tmp_path):
    x, z = toy_data()
    x_val, z_val = toy_data(batch=6, seed=4)
    model = make_model()
    history = fit(model, x, z, x_val, z_val, epochs=2, device="cuda", checkpoint_dir=tmp_path, **KW)
    assert len(history.train_loss) == 2
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert model.device.type == "cuda"
    assert all(p.is_cuda for p in model.parameters())

    # resume on the GPU from a checkpoint written there
    resumed = make_model().to("cuda")
    history = fit(
        resumed,
        x,
        z,
        x_val,
        z_val,
        epochs=3,
        device="cuda",
        checkpoint_dir=tmp_path,
        resume=True,
        **KW,
    )
    assert len(history.train_loss) == 3
    assert all(p.is_cuda and torch.isfinite(p).all() for p in resumed.parameters())


def test_custom_loss_fn_is_used_for_training_and_validation():
    from alternators_ppl.inference import trace_loss

    calls = []

    def counting_trace_loss(model, x, mask, z_target):
        calls.append(x.shape)
        return trace_loss(model, x, mask, z_target)

    model = Alternator(2, 2, hidden=(8,))
    x = torch.randn(6, 5, 2)
    history = fit(
        model, x, x_val=x[:2], epochs=2, batch_size=3, progress=False, loss_fn=counting_trace_loss
    )
    assert len(calls) == 2 * 2 + 2 * 1  # two train batches and one validation batch per epoch
    assert len(history.val_loss) == 2
    with pytest.raises(TypeError, match="loss_fn"):
        fit(model, x, epochs=1, progress=False, loss_fn="trace")


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(lr=1e-2), "lr"),
        (dict(epochs=7), "epochs"),
        (dict(batch_size=3), "batch_size"),
        (dict(seed=2), "seed"),
        (dict(warmup_epochs=1), "warmup_epochs"),
        (dict(data_seed=5), "data"),
    ],
)
def test_resume_with_other_run_arguments_is_an_error_naming_them(tmp_path, change, named):
    x, _ = toy_data()
    kw = {**KW, "epochs": 6}
    fit(make_model(), x, checkpoint_dir=tmp_path, callback=lambda e, h: e == 2, **kw)
    data_seed = change.pop("data_seed", None)
    if data_seed is not None:
        x, _ = toy_data(seed=data_seed)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=rf"run arguments differ \({named}: checkpoint"):
        fit(make_model(), x, checkpoint_dir=tmp_path, resume=True, **{**kw, **change})
    assert (tmp_path / "last.pt").read_bytes() == before  # nothing was overwritten


def test_resume_without_a_checkpoint_is_an_error_unless_auto(tmp_path):
    x, _ = toy_data()
    kw = {**KW, "epochs": 2}
    with pytest.raises(ValueError, match="no checkpoint .*last.pt; use resume='auto'"):
        fit(make_model(), x, checkpoint_dir=tmp_path, resume=True, **kw)
    history = fit(make_model(), x, checkpoint_dir=tmp_path, resume="auto", **kw)
    assert history.epochs_run == 2 and (tmp_path / "last.pt").is_file()
    again = fit(make_model(), x, checkpoint_dir=tmp_path, resume="auto", **kw)
    assert again.epochs_run == 2 and again.train_loss == history.train_loss  # nothing left


def test_fit_refuses_data_with_no_observed_entry():
    x, _ = toy_data()
    with pytest.raises(ValueError, match="x_train has no observed entry"):
        fit(make_model(), torch.full_like(x, float("nan")), **KW)
    with pytest.raises(ValueError, match="x_train has no observed entry"):
        fit(make_model(), x, mask_train=torch.zeros(x.shape[:2], dtype=torch.bool), **KW)


def test_budget_stops_after_the_epoch_that_spends_it():
    x, _ = toy_data()
    history = fit(make_model(), x, budget_s=1e-9, **{**KW, "epochs": 5})
    assert history.epochs_run == 1 and history.stop_reason == "budget"
    assert history.steps == math.ceil(x.shape[0] / KW["batch_size"])


def test_backward_in_chunks_equals_the_whole_minibatch_gradient():
    """Chunk gradients weighted by their share give the minibatch mean's gradient (the slow
    reference: one backward of the whole minibatch), for any chunk size."""
    from alternators_ppl.inference.loop import backward_in_chunks

    x, _ = toy_data(batch=10)
    model = make_model()

    def loss_of(part):  # a deterministic per-sequence mean: the OTN and FTN on the data
        per_sequence = model.ftn(x[part]).square().sum((1, 2))
        return (per_sequence + model.otn(x[part, :, :LAT]).sum((1, 2))).mean()

    index = torch.tensor([7, 1, 4, 0, 9, 2, 3])
    model.zero_grad()
    whole = loss_of(index)
    whole.backward()
    want = [p.grad.clone() for p in model.parameters()]
    for chunk in (1, 3, 7, None):
        model.zero_grad()
        value = backward_in_chunks(loss_of, index, chunk)
        assert value == pytest.approx(whole.item(), rel=1e-12)
        for p, w in zip(model.parameters(), want, strict=True):
            assert torch.allclose(p.grad, w, rtol=1e-12, atol=1e-14)


def test_gradient_chunk_only_on_the_cpu(monkeypatch):
    from alternators_ppl.inference import loop

    monkeypatch.setattr(loop, "CPU_CHUNK_STEPS", 100)
    assert loop.gradient_chunk(9, 30, "cpu") == 3  # 270 steps: three chunks of 3 sequences
    assert loop.gradient_chunk(7, 30, "cpu") == 3  # 210 steps: three chunks, 3 + 3 + 1
    assert loop.gradient_chunk(3, 30, "cpu") == 3  # 90 steps: one chunk
    assert loop.gradient_chunk(4, 500, "cpu") == 1
    assert loop.gradient_chunk(9, 30, "meta") is None


def test_fit_trains_the_same_weights_in_chunks(monkeypatch):
    """fit with minibatches cut into chunks of one sequence reaches the weights of fit without
    chunks, for a loss without random draws."""
    from alternators_ppl.inference import loop

    x, _ = toy_data()
    sizes = []

    def loss_fn(model, x, mask, z):
        sizes.append(x.shape[0])
        return (model.x_loc(model.ftn(x)[..., :LAT]) - x).square().sum((1, 2)).mean()

    states = []
    for steps_per_chunk in (10**9, 16):  # one chunk per minibatch; one sequence per chunk
        monkeypatch.setattr(loop, "CPU_CHUNK_STEPS", steps_per_chunk)
        sizes.clear()
        model = make_model()
        fit(model, x, epochs=3, loss_fn=loss_fn, calibrate=False, **KW)
        states.append(state_of(model))
    assert set(sizes) == {1}  # toy_data's 16 steps: one sequence per chunk
    for key in states[0]:
        assert torch.allclose(states[0][key], states[1][key], rtol=1e-9, atol=1e-12), key
