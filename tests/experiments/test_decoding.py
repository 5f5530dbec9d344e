"""Decoding: the paper's Lorenz-spikes task, the decoders (Wiener, Kalman, GRU, Alternator),
free-running supervised training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alternators_ppl.data.decoding import (
    MinMaxScaler,
    gaussian_kernel,
    lagged_bins,
    smooth_counts,
    split_in_time,
)
from alternators_ppl.data.paper_spikes import noisy_euler_lorenz, paper_spikes_task
from alternators_ppl.inference import fit
from alternators_ppl.inference.decoders import AlternatorDecoder, GRUDecoder
from alternators_ppl.inference.supervised import (
    ALPHA_GRID,
    SupervisedHistory,
    decoding_error,
    free_running_loss,
    prepare_supervised,
    window_sequences,
)
from alternators_ppl.models import Alternator
from alternators_ppl.models.decoders import (
    Decoder,
    KalmanDecoder,
    WienerDecoder,
    fit_linear_gaussian,
    kalman_filter,
    ridge_fit,
)


@pytest.fixture(scope="module")
def task():
    return paper_spikes_task(seed=0)


# ----------------------------------------------------------------------------- the task
def test_paper_task_statistics(task):
    spikes = task.arrays["spikes"]
    assert spikes.shape == (1600, 100)
    assert set(np.unique(spikes)) <= {0.0, 1.0}  # min(Poisson, 1)
    assert 0.2 < spikes.mean() < 0.4  # about 0.3 spikes per bin
    silent = np.mean(spikes.mean(0) < 0.01)
    assert 0.03 <= silent <= 0.2  # about 10% nearly silent neurons
    states = task.arrays["states"]
    np.testing.assert_allclose(states.min(0), -2)
    np.testing.assert_allclose(states.max(0), 2)
    kept = task.arrays["kept"]
    assert np.all(spikes[:1120, kept].sum(0) >= 10)
    assert task.x_train.shape == (1, 1118, 2 * len(kept))
    assert task.x_test.shape == (1, 480, 2 * len(kept)) and task.z_test.shape == (1, 480, 3)


def test_paper_task_scaling_uses_train_only(task):
    # [-1, 1] exactly on train; the scaler was fitted without the test span
    np.testing.assert_allclose(task.x_train.min((0, 1)), -1, atol=1e-6)
    np.testing.assert_allclose(task.x_train.max((0, 1)), 1, atol=1e-6)
    scaler = task.arrays["scaler"]
    kept = task.arrays["kept"]
    feats = lagged_bins(smooth_counts(task.arrays["spikes"][:, kept]), (2, 1))
    refit = MinMaxScaler().fit(feats[:1118])
    np.testing.assert_allclose(scaler.min, refit.min)
    np.testing.assert_allclose(scaler.transform(feats[1118:]), task.x_test[0], atol=1e-5)


def test_paper_task_seeded_and_lags():
    a, b, c = paper_spikes_task(3), paper_spikes_task(3), paper_spikes_task(4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.arrays["spikes"], c.arrays["spikes"])
    # the features at row i are the smoothed bins (t-2, t-1) with t = i + 2, never bin t
    kept = a.arrays["kept"]
    smooth = smooth_counts(a.arrays["spikes"][:, kept])
    n = len(kept)
    lo, hi = a.arrays["scaler"].min, a.arrays["scaler"].min + a.arrays["scaler"].span
    row = 2 * (smooth[5 - 2] - lo[:n]) / (hi[:n] - lo[:n]) - 1
    np.testing.assert_allclose(a.x_train[0, 5 - 2, :n], row, atol=1e-5)
    row_t1 = 2 * (smooth[5 - 1] - lo[n:]) / (hi[n:] - lo[n:]) - 1
    np.testing.assert_allclose(a.x_train[0, 5 - 2, n:], row_t1, atol=1e-5)
    np.testing.assert_allclose(a.z_train[0, 5 - 2], a.arrays["states"][5], atol=1e-6)


def test_noisy_euler_matches_a_plain_loop():
    rng = np.random.default_rng(7)
    noise = rng.normal(0, np.sqrt(0.1), size=(5, 3))
    x = y = z = 0.0
    expected = []
    for n0, n1, n2 in noise:
        dx, dy, dz = 10 * (y - x), x * (18 - z) - y, x * y - 8 / 3 * z
        x, y, z = x + 0.03 * dx + (n0 + n1) / 2, y + 0.03 * dy + (n0 + n2) / 2, (
            z + 0.03 * dz + (n0 + n1 + n2) / 3
        )
        expected.append((x, y, z))
    np.testing.assert_allclose(noisy_euler_lorenz(5, seed=7), expected)


def test_smoothing_and_lags_against_direct_sums():
    counts = np.random.default_rng(0).poisson(0.5, size=(20, 2)).astype(float)
    taps = gaussian_kernel(6, 2.0)
    assert taps.sum() == pytest.approx(1.0)
    causal = smooth_counts(counts, causal=True)
    t = 10
    np.testing.assert_allclose(causal[t], taps[::-1] @ counts[t - 5 : t + 1])
    lagged = lagged_bins(counts, (2, 1))
    np.testing.assert_array_equal(lagged[0], np.r_[counts[0], counts[1]])
    with pytest.raises(ValueError, match="lags"):
        lagged_bins(counts, (-1,))
    assert split_in_time(100, (0.7, 0.15, 0.15)) == [slice(0, 70), slice(70, 85), slice(85, 100)]


# ----------------------------------------------------------------------------- Wiener
def test_ridge_matches_lstsq_on_augmented_system():
    rng = np.random.default_rng(1)
    feats, targets, lam = rng.normal(size=(50, 6)), rng.normal(size=(50, 2)), 3.0
    w, b = ridge_fit(feats, targets, lam)
    # augmented least squares: [X 1; sqrt(lam) I 0] [W; b] = [Y; 0]
    aug_x = np.block([[feats, np.ones((50, 1))], [np.sqrt(lam) * np.eye(6), np.zeros((6, 1))]])
    aug_y = np.vstack([targets, np.zeros((6, 2))])
    sol = np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]
    np.testing.assert_allclose(w, sol[:-1], atol=1e-10)
    np.testing.assert_allclose(b, sol[-1], atol=1e-10)


def test_wiener_picks_lambda_on_validation_and_decodes(task):
    dec = WienerDecoder().fit(task.x_train, task.z_train)
    assert isinstance(dec, Decoder)
    assert dec.lam == max(dec.val_scores, key=dec.val_scores.get)
    pred = dec.predict(task.x_test)
    r2 = 1 - ((pred - task.z_test) ** 2).sum((0, 1)) / task.z_test[0].var(0) / 480
    assert np.all(r2 > 0.95)
    assert dec.sample(task.x_test, 3) is None
    with pytest.raises(ValueError, match="x"):
        dec.predict(task.x_test[..., :5])


# ----------------------------------------------------------------------------- Kalman
def test_kalman_filter_matches_pykalman():
    pykalman = pytest.importorskip("pykalman")
    rng = np.random.default_rng(2)
    z = np.cumsum(rng.normal(size=(1, 200, 2)) * 0.3, axis=1)
    x = z @ rng.normal(size=(2, 5)) + 0.5 + 0.2 * rng.normal(size=(1, 200, 5))
    p = fit_linear_gaussian(z, x)
    means, covs = kalman_filter(p, x[0, :40])
    kf = pykalman.KalmanFilter(
        transition_matrices=p["A"], transition_offsets=p["a"], transition_covariance=p["Q"],
        observation_matrices=p["H"], observation_offsets=p["c"], observation_covariance=p["R"],
        initial_state_mean=p["A"] @ p["m0"] + p["a"],
        initial_state_covariance=p["A"] @ p["P0"] @ p["A"].T + p["Q"],
    )  # fmt: skip
    ref_m, ref_c = kf.filter(x[0, :40])
    np.testing.assert_allclose(means, ref_m, atol=1e-8)
    np.testing.assert_allclose(covs, ref_c, atol=1e-8)


def test_kalman_fit_recovers_linear_gaussian_parameters():
    rng = np.random.default_rng(3)
    A, H = np.array([[0.9, 0.1], [-0.1, 0.9]]), rng.normal(size=(4, 2))
    z = np.zeros((20000, 2))
    for t in range(1, len(z)):
        z[t] = A @ z[t - 1] + 0.1 * rng.normal(size=2)
    x = z @ H.T + 0.3 * rng.normal(size=(len(z), 4))
    p = fit_linear_gaussian(z[None], x[None])
    np.testing.assert_allclose(p["A"], A, atol=0.02)
    np.testing.assert_allclose(p["H"], H, atol=0.05)
    np.testing.assert_allclose(p["R"], 0.09 * np.eye(4), atol=0.01)


def test_kalman_decoder_draws_match_filter(task):
    dec = KalmanDecoder().fit(task.x_train, task.z_train)
    draws = dec.sample(task.x_test, 400)
    means, covs = dec.filter(task.x_test)
    assert draws.shape == (400, 1, 480, 3)
    np.testing.assert_allclose(draws.mean(0), means, atol=0.1)
    np.testing.assert_allclose(draws.var(0), np.diagonal(covs, axis1=-2, axis2=-1), rtol=0.35)


# ----------------------------------------------------------------------------- supervised fit
def test_window_sequences_cover_every_step():
    x = torch.arange(20.0).reshape(1, 20, 1)
    w = window_sequences(x, 8, 5)
    assert w.shape == (4, 8, 1)
    assert w[-1, -1, 0] == 19  # the last window ends at T
    assert set(w.flatten().tolist()) == set(range(20))


def test_prepare_supervised_holds_out_the_end_of_training():
    x = torch.randn(1, 400, 3)
    z = torch.randn(1, 400, 2)
    mask = torch.ones_like(x, dtype=torch.bool)
    (xt, zt, _), (xv, zv, _) = prepare_supervised(x, z, mask, window=64, stride=8)
    assert xt.shape[1:] == (65, 3) and xv.shape[1:] == (65, 3)
    cut = 400 - 65
    train_values = set(xt[..., 0].flatten().tolist())
    assert train_values <= set(x[0, :cut, 0].tolist())
    assert not set(xv[..., 0].flatten().tolist()) & train_values


def test_free_running_loss_scores_the_recursion_started_at_the_observed_z():
    torch.manual_seed(0)
    model = Alternator(4, 2, sigma_z=1e-3, hidden=(8,)).double()
    x = torch.randn(3, 11, 4, dtype=torch.float64)
    z = torch.randn(3, 11, 2, dtype=torch.float64)
    mask = torch.ones_like(x, dtype=torch.bool)
    # oracle: the noise-free recursion, step by step, from z_0 = z[:, 0]
    alpha, sz = 0.3, 1e-3
    z_prev, z_sq, x_sq = z[:, 0], 0.0, 0.0
    for t in range(1, 11):
        x_sq = x_sq + (x[:, t] - model.x_loc(z[:, t - 1])).square().sum()
        z_prev = alpha**0.5 * model.ftn(x[:, t]) + (1 - alpha - sz**2) ** 0.5 * z_prev
        z_sq = z_sq + (z[:, t] - z_prev).square().sum()
    expected = (sz**2 * x_sq + 0.3**2 * z_sq) / 3 / 10
    got = free_running_loss(model, x, mask, z)
    assert got.item() == pytest.approx(expected.item(), rel=1e-3)


def test_fit_default_supervised_selects_alpha_on_validation(task, tmp_path):
    x, z = task.x_train[:, :300], task.z_train[:, :300]
    torch.manual_seed(0)
    model = Alternator(task.obs_dim, 3, hidden=(16,))
    # calibrate=False: the noise as trained, so the alpha scores are reproducible below
    hist = fit(model, x, z_train=z, epochs=2, progress=False, seed=0, checkpoint_dir=tmp_path,
               calibrate=False)  # fmt: skip
    assert isinstance(hist, SupervisedHistory)
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["alpha"] == hist.alpha
    winner = (tmp_path / f"alpha-{hist.alpha:g}" / "best.pt").read_bytes()
    assert (tmp_path / "best.pt").read_bytes() == winner
    assert set(hist.alpha_scores) == set(ALPHA_GRID)
    assert hist.alpha == min(hist.alpha_scores, key=hist.alpha_scores.get)
    assert model.alpha_values == (hist.alpha,)
    assert len(hist.val_loss) == 2  # a validation span was carved out of train
    # the score is the decoding error of the returned model on the held-out tail
    xv, zv = torch.as_tensor(x[:, 300 - 65 :]), torch.as_tensor(z[:, 300 - 65 :])
    assert decoding_error(model, xv, zv) == pytest.approx(hist.alpha_scores[hist.alpha])


def test_fit_supervised_modes_are_one_keyword_away(task):
    x, z = task.x_train[:, :300], task.z_train[:, :300]
    calls = []

    def spy(model, xb, mask, zb):
        calls.append(xb.shape)
        return free_running_loss(model, xb, mask, zb)

    model = Alternator(task.obs_dim, 3, hidden=(16,))
    fit(model, x, z_train=z, epochs=1, progress=False, loss_fn=spy)
    assert calls[0][1] == 300  # loss_fn given: the data as given, no windows
    with pytest.raises(ValueError, match="supervised"):
        fit(model, x, z_train=z, epochs=1, progress=False, supervised="nope")
    hist_tf = fit(model, x, z_train=z, epochs=2, progress=False, supervised="teacher-forcing")
    assert hist_tf.val_loss == [] and model.alpha_values == (0.3,)  # Eq. 12 as written
    hist_fr = fit(model, x, z_train=z, epochs=2, progress=False, supervised="free-running")
    assert len(hist_fr.val_loss) == 2 and not isinstance(hist_fr, SupervisedHistory)


# ----------------------------------------------------------------------------- trained decoders
@pytest.mark.slow
def test_gru_and_alternator_decoders_decode_held_out(task):
    x, z = task.x_train, task.z_train
    gru = GRUDecoder(hidden=16, epochs=15, patience=5).fit(x, z)
    pred = gru.predict(task.x_test)
    assert pred.shape == (1, 480, 3)
    r2 = 1 - ((pred - task.z_test) ** 2).sum((0, 1)) / task.z_test[0].var(0) / 480
    assert np.all(r2 > 0.5)
    alt = AlternatorDecoder(num_samples=4, model_args={"hidden": (16,)},
                            fit_args={"epochs": 8}).fit(x, z)  # fmt: skip
    draws = alt.sample(task.x_test)
    assert draws.shape == (4, 1, 480, 3)
    r2 = 1 - ((draws.mean(0) - task.z_test) ** 2).sum((0, 1)) / task.z_test[0].var(0) / 480
    assert np.all(r2 > 0.5)


# ----------------------------------------------------------------------------- Glaser loader
def _write_glaser(path, kind="tuple", steps=200, neurons=5, dims=2):
    import pickle

    rng = np.random.default_rng(0)
    neural = rng.poisson(2.0, size=(steps, neurons)).astype(float)
    behaviour = np.cumsum(rng.normal(size=(steps, dims)), 0)
    content = (neural, behaviour) if kind == "tuple" else {
        "neural_data": neural, "vels_binned": behaviour}  # fmt: skip
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)
    return neural, behaviour


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_glaser_loader_lags_splits_and_train_scaling(tmp_path, kind):
    from alternators_ppl.data.glaser import glaser_lagged, glaser_task

    neural, behaviour = _write_glaser(tmp_path / "m1.pickle", kind)
    task = glaser_task(tmp_path / "m1.pickle", bins_before=3, bins_current=1, bins_after=1)
    rows = 200 - 3 - 1
    assert task.x_train.shape[1] + task.x_val.shape[1] + task.x_test.shape[1] == rows
    assert task.x_train.shape[1] == round(0.7 * rows) and task.x_val.shape[1] == round(0.15 * rows)
    assert task.x_train.shape[2] == 5 * 5
    # Glaser's get_spikes_with_history, by hand: row i = time i + 3, bins t-3..t+1
    lagged = glaser_lagged(neural, 3, 1, 1)
    t = 10
    np.testing.assert_array_equal(lagged[t - 3], neural[t - 3 : t + 2].reshape(-1))
    # standardised with train statistics only
    train_rows = lagged[: task.x_train.shape[1]]
    mean, std = train_rows.mean(0), train_rows.std(0)
    np.testing.assert_allclose(task.x_test[0], (lagged[-task.x_test.shape[1] :] - mean) / std,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    z_rows = behaviour[3 : 200 - 1]
    ztr = z_rows[: task.x_train.shape[1]]
    z_val_rows = z_rows[len(ztr) : len(ztr) + task.z_val.shape[1]]
    expected = (z_val_rows - ztr.mean(0)) / ztr.std(0)
    np.testing.assert_allclose(task.z_val[0], expected, rtol=1e-4, atol=1e-4)


def test_glaser_loader_bad_files(tmp_path):
    import pickle

    from alternators_ppl.data.glaser import glaser_task

    with pytest.raises(FileNotFoundError, match="nope"):
        glaser_task(tmp_path / "nope.pickle")
    with open(tmp_path / "bad.pickle", "wb") as handle:
        pickle.dump({"spikes": np.zeros((5, 2))}, handle)
    with pytest.raises(ValueError, match="neural_data"):
        glaser_task(tmp_path / "bad.pickle")
    with open(tmp_path / "short.pickle", "wb") as handle:
        pickle.dump((np.zeros((5, 2)), np.zeros((4, 1))), handle)
    with pytest.raises(ValueError, match="share T"):
        glaser_task(tmp_path / "short.pickle")


# ----------------------------------------------------------------------------- ratinabox
def test_ratinabox_task_real_trajectory_and_place_cells():
    from alternators_ppl.data.ratinabox_cells import load_sargolini, ratinabox_task, sargolini_path

    try:
        sargolini_path()
    except ImportError as err:
        pytest.skip(f"ratinabox data not available: {err}")

    t, pos = load_sargolini()
    assert pos.shape == (29800, 2) and np.median(np.diff(t)) == pytest.approx(0.02)
    task = ratinabox_task(seed=0, max_bins=1000)
    assert task.names == ("x", "y", "vx", "vy")
    assert task.x_train.shape[1] + task.x_val.shape[1] + task.x_test.shape[1] == 998
    # position of bin b is the mean of its 5 samples; behaviour standardised on train
    np.testing.assert_allclose(task.arrays["position"][3], pos[15:20].mean(0))
    np.testing.assert_allclose(task.z_train[0].mean(0), 0, atol=1e-5)
    counts = task.arrays["counts"]
    assert 0.01 < counts.mean() < 1.0
    # place cells carry position: a Wiener decoder gets it on the held-out span
    pred = WienerDecoder().fit(task.x_train, task.z_train, task.x_val, task.z_val).predict(
        task.x_test)  # fmt: skip
    r2 = 1 - ((pred - task.z_test) ** 2).sum((0, 1)) / task.z_test[0].var(0) / task.z_test.shape[1]
    assert np.all(r2[:2] > 0.5)


# ----------------------------------------------------------------------------- the command
def test_decode_command_writes_a_run_folder(tmp_path, capsys):
    import json

    from alternators_ppl.cli import main

    argv = ["decode", "lorenz-paper", "--quick", "--models", "alternator,wiener,kalman",
            "--runs-dir", str(tmp_path), "--name", "d"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads((tmp_path / "d" / "decoding.json").read_text())
    assert set(out["per_seed"]) == {"alternator", "wiener", "kalman"}
    row = out["per_seed"]["alternator"][0]
    assert len(row["r2"]) == 3 and len(row["coverage_90"]) == 3 and row["train_s"] > 0
    assert row["alpha"] in ALPHA_GRID
    assert out["per_seed"]["wiener"][0]["coverage_90"] is None
    assert (tmp_path / "d" / "decoded.png").stat().st_size > 1000
    assert "| wiener |" in (tmp_path / "d" / "decoding.md").read_text()
    assert main(argv) == 2  # never overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["decode", "glaser", "--quick", "--runs-dir", str(tmp_path)]) == 2
    with pytest.raises(SystemExit, match="2"):
        main(["decode", "lorenz-paper", "--models", "svm"])


def test_decode_coverage_comes_from_interval_draws_not_the_point_budget():
    """A decoder whose draws are exchangeable with the truth covers about 90% when the interval
    comes from 200 draws; from the 20 draws of the point estimate it would cover about 81%."""
    from alternators_ppl.data.decoding import DecodingTask
    from alternators_ppl.experiments.decode import score_decoder

    rng = np.random.default_rng(0)
    steps = 4000

    class Exchangeable:  # truth and draws: independent N(0, 1) at every step
        def predict(self, x):
            return np.zeros((1, steps, 2))

        def sample(self, x, num_samples=None):
            return rng.standard_normal((20 if num_samples is None else num_samples, 1, steps, 2))

    x = np.zeros((1, steps, 1), np.float32)
    z = rng.standard_normal((1, steps, 2)).astype(np.float32)
    task = DecodingTask(x, z, None, None, x, z, ("a", "b"))
    scores, pred, draws = score_decoder(Exchangeable(), task, interval_samples=200)
    assert np.all(np.abs(np.asarray(scores["coverage_90"]) - 0.9) < 0.02)
    assert draws.shape == (200, steps, 2) and pred.shape == (steps, 2)
