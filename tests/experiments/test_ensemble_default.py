"""The ``alternator`` of compare and forecast is an ensemble of ALTERNATOR_MEMBERS networks;
``--members`` sets the count, and each member's choices reach the run's records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alternators_ppl.cli import main
from alternators_ppl.evaluation.spread_recalibration import SpreadRecalibrated
from alternators_ppl.experiments.file_task import FileCompareConfig
from alternators_ppl.experiments.registry import (
    ALTERNATOR_MEMBERS,
    AlternatorModel,
    build_model,
    training_options,
)
from alternators_ppl.models import Ensemble

pd = pytest.importorskip("pandas", reason="file commands need the [data] extra (pandas)")


def test_the_default_alternator_is_an_ensemble_of_alternator_models():
    recalibrated = build_model("alternator", 2, **training_options("alternator", 3))
    assert isinstance(recalibrated, SpreadRecalibrated)  # the spread per lead, on validation
    model = recalibrated.model
    assert isinstance(model, Ensemble) and len(model.members) == ALTERNATOR_MEMBERS == 5
    assert all(isinstance(m, AlternatorModel) and m.epochs == 3 for m in model.members)
    assert model.name == "alternator" and model.has_likelihood_estimate
    assert isinstance(build_model("alternator", 2, members=1).model, AlternatorModel)
    assert isinstance(build_model("alternator", 2, recalibrate_spread=False), Ensemble)
    assert training_options("kalman", 10) == {"em_iters": 5}
    assert model.members[0].latent_timescales == "auto"


def _csv(path):
    rng = np.random.default_rng(0)
    t = np.arange(120)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=120, freq="D"),
            "a": np.sin(2 * np.pi * t / 20) + rng.normal(0, 0.2, 120),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_members_reach_compare_and_forecast_records(tmp_path, capsys):
    path = _csv(tmp_path / "s.csv")
    small = ["--quick", "--epochs", "1", "--context", "8", "--horizon", "3", "--stride", "4"]
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--members", "2", *small]
    code = main(["compare", str(path), "--models", "alternator", "--name", "c", *common])
    assert code == 0, capsys.readouterr().err
    results = json.loads((runs / "c" / "comparison.json").read_text())
    assert results["config"]["members"] == 2
    chosen = results["per_seed"]["alternator"][0]["chosen"]
    assert chosen["members"] == 2 and chosen["member_seeds"] == [0, 1]
    assert [c["calibration"]["criterion"] for c in chosen["per_member"]] == [
        "smc_log_marginal_per_entry"
    ] * 2
    assert results["config"]["latent_timescales"] == "given"  # --quick: the paper's one sigma_z
    assert [c["latent_timescales"]["kept"] for c in chosen["per_member"]] == ["given"] * 2
    spread = ["--latent-timescales", "spread"]
    assert main(["forecast", str(path), "--name", "f", *spread, *common]) == 0
    summary = json.loads((runs / "f" / "forecast.json").read_text())
    assert summary["config"]["members"] == 2
    assert summary["history"]["chosen"]["members"] == 2
    kept = [c["latent_timescales"]["kept"] for c in summary["history"]["chosen"]["per_member"]]
    assert summary["config"]["latent_timescales"] == "spread" and kept == ["spread"] * 2


def test_bad_member_count_is_one_line(tmp_path, capsys):
    path = _csv(tmp_path / "s.csv")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(path), "--members", "0", "--quick"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--members" in err
    with pytest.raises(ValueError, match="members"):
        FileCompareConfig(str(path), members=0)
    with pytest.raises(ValueError, match="latent_timescales"):
        FileCompareConfig(str(path), latent_timescales="many")
