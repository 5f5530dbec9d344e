"""Property tests of the input checks (issue 11): random shapes, dtypes, NaN/inf patterns and
masks handed to ``alternators_ppl.validation`` and to the public entry points get either a
clear ``ValueError``/``TypeError`` whose message names the argument, or a finite result.

Hypothesis runs a fixed, derandomized profile (25 examples per property, no deadline), so the
examples are the same on every run and in CI.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from alternators_ppl.inference import fit
from alternators_ppl.models import Alternator
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_float,
    check_positive_int,
    check_sequences,
)

settings.register_profile(
    "input-properties",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("input-properties")

OBS_DIM, LATENT_DIM = 2, 3
DTYPES = ["float16", "float32", "float64", "int32", "int64", "bool", "complex64", "complex128"]
PATTERNS = ["finite", "nan", "inf", "-inf", "all_nan"]


# --------------------------------------------------------------------------- strategies


FLOATS = ["float16", "float32", "float64"]
LAYOUTS = ["numpy", "torch", "read-only", "reversed", "big-endian"]
SIDES = st.integers(0, 4)


@st.composite
def arrays(
    draw,
    ranks=(1, 2, 3, 4),
    sides=SIDES,
    feature_dims=None,
    dtypes=DTYPES,
    patterns=PATTERNS,
):
    """A numpy array or torch tensor of a random rank, shape, dtype and NaN/inf pattern.

    Also draws odd memory layouts a user can hand over: read-only, reversed (negative
    strides) and big-endian numpy arrays.
    """
    rank = draw(st.sampled_from(ranks))
    shape = [draw(sides) for _ in range(rank)]
    if feature_dims is not None and rank == 3:
        shape[2] = draw(st.sampled_from(feature_dims))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).uniform(-3.0, 3.0, size=shape)
    pattern = draw(st.sampled_from(patterns))
    if values.size and pattern != "finite":
        flat = values.reshape(-1)
        if pattern == "all_nan":
            flat[:] = np.nan
        else:
            where = np.random.default_rng(seed + 1).random(flat.size) < 0.3
            where[draw(st.integers(0, flat.size - 1))] = True
            flat[where] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[pattern]
    with np.errstate(invalid="ignore"):
        array = values.astype(dtype)
    kind = draw(st.sampled_from(LAYOUTS))
    if kind == "torch":
        return torch.from_numpy(array)
    if kind == "read-only":
        array.flags.writeable = False
    elif kind == "reversed" and array.ndim:
        array = array[::-1]
    elif kind == "big-endian" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">"))
    return array


def good_sequences(patterns=("finite", "nan", "all_nan")):
    """Well-formed data for a model with D = 2: (B, T, 2) float16/32/64 arrays or tensors in
    any layout, with the NaN ``patterns``."""
    return arrays(
        ranks=(3,),
        sides=st.integers(1, 3),
        feature_dims=(OBS_DIM,),
        dtypes=FLOATS,
        patterns=patterns,
    )


def any_sequences():
    """Anything a user may hand over as data: wrong rank or feature dim, empty axes, any
    dtype, inf, NaN, odd layouts (the well-formed among them too)."""
    return arrays(ranks=(2, 3, 3, 3), sides=st.integers(0, 3), feature_dims=(OBS_DIM, 1, 3))


def data_shape(x) -> tuple[int, int, int]:
    """(B, T, D) of ``x`` when it has rank 3, else a stand-in for drawing a mask."""
    return tuple(x.shape) if x.ndim == 3 else (1, 1, OBS_DIM)


def missing_of(x) -> np.ndarray:
    """Where ``x`` is NaN, as a (B, T, D) bool array (all False when x is not float data)."""
    shape = data_shape(x)
    if x.ndim != 3 or not _is_float(x):
        return np.zeros(shape, dtype=bool)
    return np.isnan(_numpy_of(x))


@st.composite
def masks(draw, missing: np.ndarray, good_only: bool = False):
    """A mask for data whose NaN entries are ``missing`` (B, T, D).

    ``good_only``: None, or a (B, T) or (B, T, D) bool numpy array or tensor that hides every
    NaN. Otherwise also wrong ones: another shape, a NaN marked observed, a float dtype, a list.
    """
    b, t, d = missing.shape
    kinds = ["none", "numpy", "torch"] + ([] if good_only else ["float", "list"])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    good = [(b, t), (b, t, d)]
    wrong = [(b,), (b, t, d + 1), (b + 1, t), (t, b, d, 1)]
    shape = draw(st.sampled_from(good if good_only else good + wrong))
    seed = draw(st.integers(0, 2**16))
    m = np.random.default_rng(seed).random(shape) < draw(st.sampled_from([0.5, 1.0, 0.0]))
    if shape in good and (good_only or draw(st.booleans())):  # hide every NaN
        m &= ~(missing.any(-1) if len(shape) == 2 else missing)
    if kind == "numpy":
        return m
    if kind == "float":
        return torch.from_numpy(m.astype(np.float32))
    if kind == "list":
        return m.tolist()
    return torch.from_numpy(m)


SCALARS = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from([np.int64(3), np.float32(0.5), np.float64(2.0), np.int8(-1), 2.0 + 1j]),
)


# --------------------------------------------------------------------------- helpers


def names_argument(err: BaseException, *names: str) -> bool:
    """True when the one-line message of ``err`` names one of ``names``."""
    message = str(err).strip()
    return "\n" not in message and any(re.search(rf"\b{re.escape(n)}\b", message) for n in names)


def _numpy_of(value) -> np.ndarray:
    """A float64 numpy view of ``value`` (numpy array or tensor) for the oracles below."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.complex128).real
    return np.asarray(value).astype(np.complex128).real


def _is_float(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype.is_floating_point
    return value.dtype.kind == "f"


def _well_formed(value, feature_dim=None) -> bool:
    """Independent statement of what ``check_sequences`` accepts."""
    if value.ndim != 3 or 0 in tuple(value.shape):
        return False
    if feature_dim is not None and value.shape[2] != feature_dim:
        return False
    return not np.isinf(_numpy_of(value)).any()


def tiny_model(seed: int = 0) -> Alternator:
    torch.manual_seed(seed)
    return Alternator(OBS_DIM, LATENT_DIM, hidden=(4,))


MODEL = tiny_model()


def call_or_named_error(fn, names):
    """Call ``fn``; return its result, or None after checking a raised error names an argument."""
    try:
        result = fn()
    except (TypeError, ValueError) as err:
        assert names_argument(err, *names), f"unclear error: {type(err).__name__}: {err}"
        event(f"refused: {str(err)[:70]}")
        return None
    event("accepted")
    return result


def assert_finite(result) -> None:
    if isinstance(result, dict):
        for value in result.values():
            assert_finite(value)
        return
    assert isinstance(result, torch.Tensor)
    assert torch.isfinite(result).all(), f"non-finite result {result}"


# --------------------------------------------------------------------------- validation


@PROFILE
@given(value=st.one_of(arrays(), SCALARS, st.lists(st.floats(), max_size=3)))
def test_as_float_tensor_float_or_named_type_error(value):
    expect_ok = isinstance(value, np.ndarray | torch.Tensor) and _is_float(value)
    if not expect_ok:
        with pytest.raises(TypeError) as info:
            as_float_tensor(value, "x_ctx")
        assert names_argument(info.value, "x_ctx")
        return
    out = as_float_tensor(value, "x_ctx", dtype=torch.float64)
    assert out.dtype == torch.float64 and tuple(out.shape) == tuple(value.shape)
    expected = _numpy_of(value)
    assert np.array_equal(out.numpy(), expected, equal_nan=True)


@PROFILE
@given(value=arrays(feature_dims=(0, 1, 2)), feature_dim=st.sampled_from([None, 2]))
@example(value=np.zeros((2, 3, 0)), feature_dim=None)  # no features at all
@example(value=np.full((1, 2, 2), np.nan), feature_dim=2)  # all missing is well-formed
def test_check_sequences_accepts_exactly_the_well_formed(value, feature_dim):
    if not _is_float(value):
        return  # as_float_tensor's job (above)
    x = as_float_tensor(value, "x_seq")
    if _well_formed(value, feature_dim):
        check_sequences(x, "x_seq", feature_dim)
    else:
        with pytest.raises(ValueError) as info:
            check_sequences(x, "x_seq", feature_dim)
        assert names_argument(info.value, "x_seq")


@PROFILE
@given(data=st.data(), b=st.integers(1, 3), t=st.integers(1, 4), d=st.integers(1, 3))
def test_check_mask_combines_mask_and_nan_or_names_mask(data, b, t, d):
    x_np = np.random.default_rng(b * 100 + t * 10 + d).normal(size=(b, t, d))
    x_np[np.random.default_rng(d).random((b, t, d)) < data.draw(st.sampled_from([0.0, 0.3]))] = (
        np.nan
    )
    x = torch.from_numpy(x_np)
    mask = data.draw(masks(np.isnan(x_np)))
    try:
        out = check_mask(mask, x, "mask_in")
    except (TypeError, ValueError) as err:
        assert names_argument(err, "mask_in"), err
        return
    # Oracle: observed = mask (broadcast over D) and not NaN; never True where x is NaN.
    assert out.dtype == torch.bool and tuple(out.shape) == (b, t, d)
    finite = ~np.isnan(x_np)
    if mask is None:
        assert np.array_equal(out.numpy(), finite)
        return
    m = np.asarray(mask, dtype=bool)
    m = np.broadcast_to(m[..., None] if m.ndim == 2 else m, (b, t, d))
    assert not (m & ~finite).any()  # a mask over a NaN must have raised
    assert np.array_equal(out.numpy(), m)


@PROFILE
@given(
    x=good_sequences(patterns=("nan", "all_nan")),
    full=st.booleans(),
    as_numpy=st.booleans(),
)
def test_nan_marked_observed_is_refused(x, full, as_numpy):
    """A mask that marks a NaN entry observed is refused by name, by check_mask and by the
    entry points that take a mask (never silently turned into NaN draws or a NaN loss)."""
    b, t, d = data_shape(x)
    mask = np.ones((b, t, d) if full else (b, t), dtype=bool)
    mask = mask if as_numpy else torch.from_numpy(mask)
    with pytest.raises(ValueError, match="mask_in") as info:
        check_mask(mask, as_float_tensor(x, "x"), "mask_in")
    assert names_argument(info.value, "mask_in")
    for call in (
        lambda: MODEL.impute(x, mask, 1),
        lambda: MODEL.infer_latents(x, mask, 1),
        lambda: fit(tiny_model(1), x, epochs=1, progress=False, mask_train=mask),
    ):
        with pytest.raises(ValueError, match="mask") as info:
            call()
        assert names_argument(info.value, "mask", "mask for x_train")


@PROFILE
@given(value=SCALARS)
def test_check_positive_int(value):
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if is_int and value >= 1:
        assert check_positive_int(value, "n_steps") == int(value)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            check_positive_int(value, "n_steps")
        assert names_argument(info.value, "n_steps")


@PROFILE
@given(value=SCALARS)
def test_check_positive_float(value):
    is_real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )
    if is_real and math.isfinite(value) and value > 0:
        assert check_positive_float(value, "lr_x") == float(value)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            check_positive_float(value, "lr_x")
        assert names_argument(info.value, "lr_x")


# --------------------------------------------------------------------------- entry points


def impute_and_infer(x, mask, num_samples):
    """impute and infer_latents on the same input: both refuse it alike, or both return
    finite draws of the right shapes."""
    shape = data_shape(x)
    names = ("x", "mask", "num_samples")
    imputed = call_or_named_error(lambda: MODEL.impute(x, mask, num_samples), names)
    latents = call_or_named_error(lambda: MODEL.infer_latents(x, mask, num_samples), names)
    assert (imputed is None) == (latents is None)  # the same checks guard both
    if imputed is not None:
        assert_finite(imputed)
        assert tuple(imputed.shape) == (num_samples, *shape)
        assert_finite(latents)
        assert tuple(latents.shape) == (num_samples, shape[0], shape[1] + 1, LATENT_DIM)
    return imputed


@PROFILE
@given(data=st.data(), x=good_sequences(), num_samples=st.sampled_from([1, 2]))
def test_impute_and_infer_latents_good_input(data, x, num_samples):
    mask = data.draw(masks(missing_of(x), good_only=True))
    assert impute_and_infer(x, mask, num_samples) is not None


@PROFILE
@given(data=st.data(), x=any_sequences(), num_samples=st.sampled_from([1, 2, 0, 1.5]))
def test_impute_and_infer_latents_any_input(data, x, num_samples):
    impute_and_infer(x, data.draw(masks(missing_of(x))), num_samples)


def forecast(x, horizon):
    out = call_or_named_error(lambda: MODEL.forecast(x, horizon, 2), ("x_context", "horizon"))
    if out is not None:
        assert_finite(out)
        assert tuple(out.shape) == (2, x.shape[0], horizon, OBS_DIM)
    return out


@PROFILE
@given(x=good_sequences(), horizon=st.integers(1, 4))
def test_forecast_good_input(x, horizon):
    assert forecast(x, horizon) is not None


@PROFILE
@given(x=any_sequences(), horizon=st.sampled_from([1, 3, 0, -1, 2.0, True]))
def test_forecast_any_input(x, horizon):
    forecast(x, horizon)


def log_joint(x, z, mask):
    out = call_or_named_error(lambda: MODEL.log_joint(x, z, mask), ("x", "z", "mask"))
    if out is not None:
        assert_finite(out)
        assert tuple(out.shape) == (data_shape(x)[0],)
    return out


def latent_paths(b: int, t: int, good_only: bool = False):
    """z for data (b, t, D): (b, t + 1, Dz) float tensors or arrays, or wrong ones."""
    good = [torch.randn(b, t + 1, LATENT_DIM), np.random.default_rng(t).normal(size=(b, t + 1, 3))]
    wrong = [
        torch.randn(b, t, LATENT_DIM),  # one step short
        torch.full((b, t + 1, LATENT_DIM), float("nan")),
        np.zeros((b, t + 1, LATENT_DIM), dtype=np.int64),
    ]
    return st.sampled_from(good if good_only else good + wrong)


@PROFILE
@given(data=st.data(), x=good_sequences(patterns=("finite",)))
def test_log_joint_good_input(data, x):
    b, t, _ = data_shape(x)
    z = data.draw(latent_paths(b, t, good_only=True))
    assert log_joint(x, z, data.draw(masks(missing_of(x), good_only=True))) is not None


@PROFILE
@given(data=st.data(), x=any_sequences())
def test_log_joint_any_input(data, x):
    b, t, _ = data_shape(x)
    log_joint(x, data.draw(latent_paths(b, t)), data.draw(masks(missing_of(x))))


def fit_one_epoch(x, mask, batch_size):
    """One epoch of ``fit`` on a fresh tiny model: a named error, or a finite loss and
    finite weights."""
    model = tiny_model(1)
    history = call_or_named_error(
        lambda: fit(
            model,
            x,
            epochs=1,
            batch_size=batch_size,
            seed=0,
            progress=False,
            warmup_epochs=0,
            mask_train=mask,
        ),
        ("x_train", "batch_size"),  # a mask error names "mask for x_train"
    )
    if history is not None:
        losses = history.to_dict()["train_loss"]
        assert len(losses) == 1 and math.isfinite(losses[0])
        for p in model.parameters():
            assert torch.isfinite(p).all()
    return history


@PROFILE
@given(
    data=st.data(),
    x=good_sequences(patterns=("finite", "nan")),
    batch_size=st.sampled_from([1, 2, 3, 0, 1.5]),
)
def test_fit_good_data(data, x, batch_size):
    mask = data.draw(masks(missing_of(x), good_only=True))
    observed = bool(check_mask(mask, as_float_tensor(x, "x")).any())
    history = fit_one_epoch(x, mask, batch_size)
    # fit refuses data with no observed entry (issue 11) and a bad batch_size; else it trains
    assert (history is not None) == (observed and batch_size in (1, 2, 3))


@PROFILE
@given(data=st.data(), x=any_sequences(), batch_size=st.sampled_from([1, 2, 0]))
def test_fit_any_input(data, x, batch_size):
    fit_one_epoch(x, data.draw(masks(missing_of(x))), batch_size)
