import numpy as np
import pandas as pd
import pytest

from tf_boneage import plots
from tf_boneage.ensemble import LinearEnsemble, fit_nnls
from tf_boneage.evaluation import mae_report


def test_nnls_recovers_known_weights_and_intercept():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 240, (200, 3))
    y = 0.5 * x[:, 0] + 0.3 * x[:, 2] + 7.0
    w, b = fit_nnls(x, y)
    np.testing.assert_allclose(w, [0.5, 0.0, 0.3], atol=1e-8)
    assert b == pytest.approx(7.0)


def test_nnls_never_gives_negative_weights():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 240, 300)
    good = truth + rng.normal(0, 5, 300)
    anti = 240 - truth  # perfectly anti-correlated: least squares would weight it negatively
    w, _ = fit_nnls(np.c_[good, anti], truth)
    assert (w >= 0).all() and w[1] == 0.0


def test_per_sex_ensemble_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    truth = rng.uniform(1, 228, n)
    male = rng.random(n) < 0.5
    table = pd.DataFrame({"boneage": truth, "male": male,
                          "A": np.where(male, truth + 5, truth - 3) + rng.normal(0, 1, n),
                          "B": truth + rng.normal(0, 20, n)})  # fmt: skip
    ens = LinearEnsemble(["A", "B"]).fit(table)
    assert ens.params["male"]["bias"] == pytest.approx(-5, abs=0.5)
    assert ens.params["female"]["bias"] == pytest.approx(3, abs=0.5)
    pred = ens.predict(table)
    assert np.abs(pred - truth).mean() < 1.5
    ens.save(tmp_path / "ens.json")
    np.testing.assert_allclose(LinearEnsemble.load(tmp_path / "ens.json").predict(table), pred)


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        fit_nnls(np.zeros((3, 2)), np.zeros(4))


def test_mae_report_by_hand():
    t = pd.DataFrame({"boneage": [10.0, 100.0, 200.0, 130.0], "pred": [12.0, 90.0, 200.0, 140.0],
                      "male": [True, True, False, False]})  # fmt: skip
    r = mae_report(t)
    assert r["all"] == {"n": 4, "mae": 5.5}
    assert r["male"] == {"n": 2, "mae": 6.0} and r["female"] == {"n": 2, "mae": 5.0}
    assert r["bands"]["0-24"] == {"n": 1, "mae": 2.0}
    assert r["mean_predictor_mae"] == pytest.approx(np.abs(t.boneage - 110).mean())


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.uniform(1, 228, 100)
    pred = truth + rng.normal(0, 8, 100)
    for fn in (plots.predicted_vs_true, plots.bland_altman, plots.error_by_band):
        path = fn(truth, pred, tmp_path / f"{fn.__name__}.png", title="t")
        assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
