"""Data-parallel training: 2 gloo processes on the CPU against 1 process with the same global
batch (same weights and checkpoints), replicas in sync, only rank 0 writes, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alternators_ppl import distributed
from alternators_ppl.inference import FilteringGuide, fit, fit_svi
from alternators_ppl.models import Alternator

NUM_TRAIN, NUM_VAL, STEPS, BATCH = 11, 5, 12, 5  # batches of 5, 5, 1: an uneven and an empty shard


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(NUM_TRAIN + NUM_VAL, STEPS, 4, generator=g, dtype=torch.float64)
    z = torch.randn(NUM_TRAIN + NUM_VAL, STEPS, 2, generator=g, dtype=torch.float64)
    return x[:NUM_TRAIN], z[:NUM_TRAIN], x[NUM_TRAIN:], z[NUM_TRAIN:]


def _model() -> Alternator:
    torch.manual_seed(3)
    return Alternator(4, 2, hidden=(8,)).double()


def deterministic_loss(model, x, mask, z):
    """Eq. 12 on the observed path (z_0 = 0): no noise, so 1 and 2 processes must agree."""
    path = torch.cat([torch.zeros_like(z[:, :1]), z], dim=1)
    return model.path_loss(x, path, mask).mean() / x.shape[1]


def _fit_deterministic(model, folder: Path):
    x, z, x_val, z_val = _data()
    return fit(
        model, x, z, x_val, z_val, epochs=3, lr=0.05, batch_size=BATCH, seed=0,
        progress=False, checkpoint_dir=folder, warmup_epochs=1, loss_fn=deterministic_loss,
    )  # fmt: skip


def _fit_noisy(model, folder: Path, epochs_run: int | None = None, resume=False):
    x, _, x_val, _ = _data()
    stop = None if epochs_run is None else (lambda epoch, history: epoch >= epochs_run)
    return fit(
        model, x, x_val=x_val, epochs=4, lr=0.05, batch_size=BATCH, seed=0, progress=False,
        checkpoint_dir=folder, warmup_epochs=1, callback=stop, resume=resume,
    )  # fmt: skip


def _worker(rank: int, world: int, root: str) -> None:
    torch.set_num_threads(1)
    root = Path(root)
    dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        model = _model()
        history = _fit_deterministic(model, root / f"det-rank{rank}")
        torch.save({"state": model.state_dict(), "history": history.to_dict()},
                   root / f"det-result{rank}.pt")  # fmt: skip
        model = _model()
        _fit_noisy(model, root / "noisy-full")
        torch.save(model.state_dict(), root / f"noisy-full{rank}.pt")
        model = _model()
        _fit_noisy(model, root / "noisy-split", epochs_run=2)
        model = _model()
        _fit_noisy(model, root / "noisy-split", resume=True)
        torch.save(model.state_dict(), root / f"noisy-resumed{rank}.pt")
        model = _model()
        guide = FilteringGuide(model, hidden=(8,))
        x, _, x_val, _ = _data()
        history = fit_svi(model, guide, x, epochs=2, batch_size=BATCH, seed=0, x_val=x_val)
        torch.save({"model": model.state_dict(), "guide": guide.state_dict(),
                    "history": history.to_dict()}, root / f"svi{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the worker in 2 gloo processes once; its output folder. A rank killed by a signal
    gets one retry in a fresh folder: on a CPU-starved machine gloo once aborted rank 0 at
    teardown (SIGABRT, "terminate called without an active exception"); a failing worker
    raises ProcessRaisedException, which is not retried."""
    for attempt in (1, 2):
        root = tmp_path_factory.mktemp("ddp")
        try:
            mp.spawn(_worker, args=(2, str(root)), nprocs=2, join=True)
            return root
        except mp.ProcessExitedException:
            if attempt == 2:
                raise


def _close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=tol, atol=tol), key


def test_two_processes_match_one_with_the_same_global_batch(two_ranks, tmp_path):
    model = _model()
    history = _fit_deterministic(model, tmp_path / "single")
    result = torch.load(two_ranks / "det-result0.pt", weights_only=False)
    _close(result["state"], model.state_dict(), 1e-9)
    for key in ("train_loss", "val_loss"):
        assert result["history"][key] == pytest.approx(history.to_dict()[key], rel=1e-9)
    assert result["history"]["steps"] == history.steps == 9
    for name in ("best.pt", "last.pt"):
        ours = torch.load(two_ranks / "det-rank0" / name, weights_only=True)
        single = torch.load(tmp_path / "single" / name, weights_only=True)
        _close(ours["model"], single["model"], 1e-9)
        assert ours["extra"]["epoch"] == single["extra"]["epoch"]
        assert ours["extra"]["run_args"] == {**single["extra"]["run_args"], "world_size": 2}


def test_replicas_stay_identical_and_only_rank_0_writes(two_ranks):
    a = torch.load(two_ranks / "det-result0.pt", weights_only=False)
    b = torch.load(two_ranks / "det-result1.pt", weights_only=False)
    _close(a["state"], b["state"], 0.0)
    noisy = [torch.load(two_ranks / f"noisy-full{r}.pt", weights_only=True) for r in (0, 1)]
    _close(*noisy, 0.0)
    assert (two_ranks / "det-rank0" / "last.pt").is_file()
    assert not (two_ranks / "det-rank1").exists()
    last = torch.load(two_ranks / "noisy-full" / "last.pt", weights_only=True)
    (rank1_rng,) = last["extra"]["rank_rng"]
    assert not torch.equal(rank1_rng["torch"], last["rng"]["torch"])  # independent noise


def test_data_parallel_svi_keeps_replicas_identical(two_ranks):
    a, b = (torch.load(two_ranks / f"svi{r}.pt", weights_only=False) for r in (0, 1))
    _close(a["model"], b["model"], 0.0)
    _close(a["guide"], b["guide"], 0.0)
    assert a["history"]["train_loss"] == b["history"]["train_loss"]  # the global batches' ELBO
    assert a["history"]["steps"] == 6 and all(map(math.isfinite, a["history"]["val_loss"]))
    model = _model()
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in a["model"].items())


def test_resumed_data_parallel_run_equals_an_uninterrupted_one(two_ranks):
    for rank in (0, 1):
        full = torch.load(two_ranks / f"noisy-full{rank}.pt", weights_only=True)
        resumed = torch.load(two_ranks / f"noisy-resumed{rank}.pt", weights_only=True)
        _close(full, resumed, 0.0)
    last = torch.load(two_ranks / "noisy-split" / "last.pt", weights_only=True)
    assert last["extra"]["epoch"] == 4


def test_helpers_are_identity_without_a_process_group():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.is_main_process()
    index = torch.arange(5)
    assert distributed.shard(index) is index
    assert distributed.average_gradients([], 3, 0.5) == (1.5, 3)
    assert distributed.all_reduce_floats([1.0, math.pi]) == [1.0, math.pi]


@pytest.mark.slow
def test_torchrun_lorenz_quick_writes_exactly_one_run_folder(tmp_path):
    import os
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "alternators_ppl", "lorenz", "--quick", "--name", "ddp",
        "--runs-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # no staging folder left over
    assert (tmp_path / "ddp" / "metrics.json").is_file()
    assert (tmp_path / "ddp" / "checkpoints" / "decoder" / "last.pt").is_file()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode != 0  # the existing run is kept; every rank stops
    assert "exists" in again.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
