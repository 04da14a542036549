import numpy as np
import pandas as pd
import pytest

from tf_boneage import plots
from tf_boneage.ensemble import LinearEnsemble, fit_nnls
from tf_boneage.evaluation import bootstrap_mae, mae_report


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
    table = pd.DataFrame(
        {
            "boneage": truth,
            "male": male,
            "A": np.where(male, truth + 5, truth - 3) + rng.normal(0, 1, n),
            "B": truth + rng.normal(0, 20, n),
        }
    )
    ens = LinearEnsemble(["A", "B"], prior_rows=0.0).fit(table)
    assert ens.params["male"]["bias"] == pytest.approx(-5, abs=0.5)
    assert ens.params["female"]["bias"] == pytest.approx(3, abs=0.5)
    pred = ens.predict(table)
    assert np.abs(pred - truth).mean() < 1.5
    ens.save(tmp_path / "ens.json")
    np.testing.assert_allclose(LinearEnsemble.load(tmp_path / "ens.json").predict(table), pred)


@pytest.mark.parametrize(
    ("prior_rows", "weight", "bias"),
    [
        # one member x = [0, 2] (centred [-1, 1], mean square 1), truth [0, 4] (centred
        # [-2, 2]): minimise (2 - w)^2 * 2 + p (w - 1)^2  ->  w = (8 + 2p) / (4 + 2p),
        # bias = mean(truth) - mean(x) w = 2 - w
        (0.0, 2.0, 0.0),
        (2.0, 1.5, 0.5),
        (6.0, 1.25, 0.75),
    ],
)
def test_prior_rows_pull_towards_the_equal_blend_by_hand(prior_rows, weight, bias):
    w, b = fit_nnls(np.array([[0.0], [2.0]]), np.array([0.0, 4.0]), prior_rows)
    assert w[0] == pytest.approx(weight) and b == pytest.approx(bias)


def test_many_prior_rows_give_the_equal_blend_and_are_saved(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 240, 40)
    x = np.c_[truth + rng.normal(0, 3, 40), 120 + 0.1 * (truth - 120)]  # good, compressed
    w, _ = fit_nnls(x, truth, prior_rows=1e9)
    np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-4)
    table = pd.DataFrame({"boneage": truth, "male": True, "A": x[:, 0], "B": x[:, 1]})
    ens = LinearEnsemble(["A", "B"], prior_rows=7.0).fit(table)
    ens.save(tmp_path / "e.json")
    assert LinearEnsemble.load(tmp_path / "e.json").prior_rows == 7.0


def test_prior_rows_must_not_be_negative():
    with pytest.raises(ValueError, match="prior_rows"):
        fit_nnls(np.zeros((3, 1)), np.zeros(3), prior_rows=-1.0)


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        fit_nnls(np.zeros((3, 2)), np.zeros(4))


def test_mae_report_by_hand():
    t = pd.DataFrame(
        {
            "boneage": [10.0, 100.0, 200.0, 130.0],
            "pred": [12.0, 90.0, 200.0, 140.0],
            "male": [True, True, False, False],
        }
    )
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


# ---- the ensemble and evaluation scripts on hand-made predictions -------------------------


def _fake_runs(root, seed=0, n=200):
    """predictions.csv of every paper run: truth + a per-model offset and noise."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    truth = rng.uniform(1, 228, n)
    male = ids % 2 == 0
    split = np.where(ids < n // 2, "val", "test")
    names = [f"{r}_reg_both" for r in "ABC"] + ["raw_reg_both"]
    names += [f"{r}_{h}_{s}" for r in "ABC" for h in ("reg", "cls") for s in ("male", "female")]
    for k, name in enumerate(names):
        keep = np.ones(n, bool)
        if name.endswith("_male"):
            keep = male
        elif name.endswith("_female"):
            keep = ~male
        pred = truth + k + rng.normal(0, 4 + k % 3, n)
        run = root / name
        run.mkdir(parents=True)
        pd.DataFrame({"id": ids, "boneage": truth, "male": male, "split": split, "pred": pred})[
            keep
        ].to_csv(run / "predictions.csv", index=False)
    return truth, male, split


def test_ensemble_and_evaluate_scripts(tmp_path):
    import json

    from tf_boneage.training import ensemble as ensemble_script
    from tf_boneage.training import evaluation as evaluate_script
    from tf_boneage.training.runs import ENSEMBLES

    truth, male, split = _fake_runs(tmp_path)
    assert ensemble_script.main([str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "ensembles.json").read_text())
    assert set(doc) == set(ENSEMBLES)
    # the prior the weights were fitted with travels with them, and the CV without it beside
    assert doc["final"]["params"]["prior_rows"] == 30.0
    assert doc["final"]["val_cv_mae_unregularised"] > 0
    assert ensemble_script.main([str(tmp_path), "--prior-rows", "0"]) == 0
    unregularised = json.loads((tmp_path / "ensembles.json").read_text())["final"]
    assert unregularised["val_cv_mae"] == pytest.approx(doc["final"]["val_cv_mae_unregularised"])
    assert unregularised["params"]["male"] != doc["final"]["params"]["male"]
    assert ensemble_script.main([str(tmp_path)]) == 0
    wide = pd.read_csv(tmp_path / "ensemble_predictions.csv")
    # the sex-specific pair: the male model for boys, the female model for girls
    a_male = pd.read_csv(tmp_path / "A_reg_male" / "predictions.csv").set_index("id")["pred"]
    boys = wide[wide["male"]]
    np.testing.assert_allclose(boys["A_reg_sex"], a_male.loc[boys["id"]].to_numpy())
    # test rows never influence the fit: corrupting their truth changes no weight
    for run in tmp_path.glob("*/predictions.csv"):
        t = pd.read_csv(run)
        t.loc[t["split"] == "test", "boneage"] = 0.0
        t.to_csv(run, index=False)
    assert ensemble_script.main([str(tmp_path)]) == 0
    assert (
        json.loads((tmp_path / "ensembles.json").read_text())["final"]["params"]
        == doc["final"]["params"]
    )
    wide.to_csv(tmp_path / "ensemble_predictions.csv", index=False)  # back to the true truth
    assert evaluate_script.main([str(tmp_path), "--figures", str(tmp_path / "fig")]) == 0
    table = json.loads((tmp_path / "table" / "table.json").read_text())
    test = wide[wide["split"] == "test"]
    expected = (test["C_reg_both"] - test["boneage"]).abs().mean()
    assert table["cells"]["C|both sexes, regression"]["mae"] == pytest.approx(expected)
    girls = test[~test["male"]]
    expected = (girls["B_cls_sex"] - girls["boneage"]).abs().mean()
    assert table["cells"]["B|female, classification"]["mae"] == pytest.approx(expected)
    assert table["cells"]["ABC|ensemble"]["model"] == "final"
    c = table["cells"]["B|female, classification"]
    assert c["low"] < c["mae"] < c["high"]  # its bootstrap interval, from the same errors
    assert c["mae"] == bootstrap_mae((girls["B_cls_sex"] - girls["boneage"]).abs())[0]
    text = (tmp_path / "table" / "table.md").read_text()
    assert "| linear ensemble of A, B, C |" in text and "(6.10)" in text
    assert f"**{c['mae']:.2f}** [{c['low']:.1f}-{c['high']:.1f}]" in text
    young = test["boneage"] < 24  # ages drawn from 1-228 months: some test rows are this young
    assert young.any()
    assert f"under 2 years: {(test['final'] - test['boneage']).abs()[young].mean():.2f}" in text
    assert "over 17 years: " in text
    assert (tmp_path / "fig" / "table_final_bland_altman.png").exists()


def test_ensemble_script_skips_incomplete_ensembles(tmp_path, capsys):
    from tf_boneage.training import ensemble as ensemble_script

    _fake_runs(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "B_cls_female")
    assert ensemble_script.main([str(tmp_path)]) == 0
    assert "final: skipped" in capsys.readouterr().out
    wide = pd.read_csv(tmp_path / "ensemble_predictions.csv")
    assert "final" not in wide and "ABC_reg_sex" in wide and "B_cls_sex" not in wide


def test_ensemble_script_says_when_val_is_too_small(tmp_path, capsys):
    from tf_boneage.training import ensemble as ensemble_script

    _fake_runs(tmp_path, n=10)  # val: 3 boys, 2 girls; every ensemble has 2+ members
    with pytest.raises(SystemExit) as exit_info:
        ensemble_script.main([str(tmp_path)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "final: skipped: need more than" in captured.out
    assert "(val rows: 3 boys, 2 girls)" in captured.out
    assert "no ensemble could be fitted" in captured.err


def test_fitted_ensemble_and_graph_ensemble_agree():
    """The numpy ensemble fitted on val and the graph's TensorFlow ensemble give the same age
    (within 1e-4 months) for random members and both sexes."""
    from tf_boneage.export.end_to_end import ensemble_age, ensemble_tensors

    rng = np.random.default_rng(7)
    n, members = 300, ["A_reg_both", "B_reg_both", "C_reg_both", "A_cls_sex"]
    truth = rng.uniform(1, 228, n)
    table = pd.DataFrame({m: truth + rng.normal(0, 5 + 3 * k, n) for k, m in enumerate(members)})
    table["boneage"], table["male"] = truth, rng.random(n) < 0.5
    ens = LinearEnsemble(members).fit(table)
    new = table.sample(100, random_state=1).reset_index(drop=True)
    new[members] = rng.uniform(0, 240, (100, len(members)))  # members never seen in the fit
    weights, bias = ensemble_tensors(ens.params)
    age, _ = ensemble_age(
        new[members].to_numpy(np.float32), new["male"].to_numpy(np.float32), weights, bias
    )
    np.testing.assert_allclose(age.numpy(), ens.predict(new), atol=1e-4)
    # members far outside the range (an extrapolating blend): both clip to 0-240 months
    new.loc[:49, members] = 600.0
    new.loc[50:, members] = -300.0
    age, _ = ensemble_age(
        new[members].to_numpy(np.float32), new["male"].to_numpy(np.float32), weights, bias
    )
    np.testing.assert_allclose(age.numpy(), ens.predict(new), atol=1e-4)
    assert set(np.unique(ens.predict(new))) == {0.0, 240.0}


def test_run_names_round_trip_and_errors():
    from tf_boneage.training import runs

    for run in runs.table_runs():
        assert runs.parse(run.name) == run
    assert [r.name for r in runs.table_runs("B", ("classification",))] == [
        "B_cls_male",
        "B_cls_female",
        "raw_reg_both",
    ]
    assert runs.parse("C_cls_sex").pair == ("C_cls_male", "C_cls_female")
    assert runs.parse("raw_reg_both").input == "raw"
    assert (
        runs.pair_of("A_reg_female") == ("A_reg", "female") and runs.pair_of("A_reg_both") is None
    )
    assert runs.table_column("ABC", "ens_sex") == "final"
    assert runs.table_column("B", "reg_sex") == "B_reg_sex"
    for bad in ("A_reg", "D_reg_both", "A_svm_both", "A_reg_other"):
        with pytest.raises(ValueError):
            runs.parse(bad)
    with pytest.raises(ValueError, match="not a sex-specific pair"):
        _ = runs.parse("A_reg_both").pair
    for name in runs.DEMO_RUNS:  # every demo run and ensemble member has a valid name
        runs.parse(name)
    for members in runs.ENSEMBLES.values():
        for name in members:
            runs.parse(name)
