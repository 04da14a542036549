"""Bootstrap intervals (hand-computed cases and errors) and the ablation comparison on val."""

import json

import numpy as np
import pandas as pd
import pytest

from tf_boneage.evaluation import bootstrap_mae, format_interval, paired_bootstrap
from tf_boneage.training import ablation


def test_constant_errors_have_a_point_interval():
    assert bootstrap_mae([3.0] * 50) == (3.0, 3.0, 3.0)


def test_two_errors_interval_by_hand():
    # resampling [0, 2] twice gives mean 0 (1/4), 1 (1/2), 2 (1/4): the central 95 % is [0, 2]
    mae, low, high = bootstrap_mae([0.0, 2.0], n_boot=4000)
    assert (mae, low, high) == (1.0, 0.0, 2.0)
    # central 40 %: the 30th and 70th percentiles both fall on the mean 1
    assert bootstrap_mae([0.0, 2.0], n_boot=4000, level=0.4)[1:] == (1.0, 1.0)


def test_interval_narrows_like_one_over_root_n():
    rng = np.random.default_rng(1)
    err = np.abs(rng.standard_t(3, size=2000)) * 8
    small = bootstrap_mae(err[:125], seed=2)
    large = bootstrap_mae(err, seed=2)
    assert small[1] < small[0] < small[2] and large[1] < large[0] < large[2]
    ratio = (small[2] - small[1]) / (large[2] - large[1])
    assert 2.5 < ratio < 6.0  # sqrt(16) = 4


def test_paired_difference_by_hand_and_narrower_than_either_mae():
    rng = np.random.default_rng(0)
    a = np.abs(rng.standard_t(3, size=500)) * 8
    b = a - 0.5  # every image 0.5 months better
    assert paired_bootstrap(a, b) == pytest.approx((-0.5, -0.5, -0.5))
    b = a + rng.normal(0, 1, size=500)
    diff = paired_bootstrap(a, b)
    assert diff[0] == pytest.approx(b.mean() - a.mean())
    own = bootstrap_mae(a)
    assert diff[2] - diff[1] < (own[2] - own[1]) / 3


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [([], [], "non-empty"), ([1.0, np.nan], [1.0, 1.0], "non-finite"), ([1.0], [1.0, 2.0], "same")],
)
def test_bad_errors_are_named(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b)


def test_format_interval():
    assert format_interval(9.871, 9.2, 10.556) == "9.87 (9.20-10.56)"
    assert format_interval(-0.42, -0.8, 0.05, signed=True) == "-0.42 (-0.80 to +0.05)"


def _run(folder, preds, split=("val",) * 4 + ("test",) * 2, seconds=120.0):
    folder.mkdir(parents=True)
    truth = [100.0, 120.0, 60.0, 200.0, 10.0, 20.0]
    pd.DataFrame(
        {"id": [1, 2, 3, 4, 5, 6], "boneage": truth, "male": 1, "split": split, "pred": preds}
    ).to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"epochs": 6, "seconds": seconds}))
    return folder


def test_compare_on_val_only_paired_by_image(tmp_path):
    base = _run(tmp_path / "base", [110.0, 110.0, 70.0, 190.0, 0.0, 0.0])  # val MAE 10
    better = _run(tmp_path / "qc", [104.0, 116.0, 64.0, 196.0, 99.0, 99.0])  # val MAE 4
    table = ablation.compare([("base", base), ("qc", better)])
    assert list(table["run"]) == ["base", "qc"] and (table["images"] == 4).all()
    assert table["mae"].tolist() == [10.0, 4.0]  # the test rows' huge errors are not read
    assert table.loc[1, "diff"] == -6.0 and table.loc[1, "diff_high"] == -6.0
    text = ablation.markdown(table)
    assert "| qc | 4.00 (4.00-4.00) | -6.00 (-6.00 to -6.00) | 6 | 2.0 |" in text
    with pytest.raises(ValueError, match="test split is for the final run"):
        ablation.compare([("base", base)], split="test")


def test_compare_refuses_runs_on_different_images(tmp_path):
    base = _run(tmp_path / "base", [110.0] * 6)
    other = _run(tmp_path / "o", [110.0] * 6, split=("val",) * 3 + ("test",) * 3)
    with pytest.raises(ValueError, match="same val images"):
        ablation.compare([("base", base), ("o", other)])
    assert ablation.main(["--base", f"b={base}", "--variant", f"o={tmp_path / 'none'}"]) == 2


def test_cli_writes_markdown_and_csv(tmp_path, capsys):
    base = _run(tmp_path / "base", [110.0] * 6)
    out = tmp_path / "a" / "ablation.md"
    assert (
        ablation.main(["--base", f"b={base}", "--variant", f"same={base}", "--out", str(out)]) == 0
    )
    assert "| same |" in out.read_text() and out.with_suffix(".csv").is_file()
    assert "| b |" in capsys.readouterr().out


def test_test_time_views_by_hand():
    """``preprocessing.views``: the first view is the crop, exactly; a shift of 0.02 of a 50 px
    wide crop moves a bright column by one pixel; a 5 degree rotation turns a bar about the
    centre; the mean over views undoes the stacking."""
    from tf_boneage.preprocessing import views

    img = np.zeros((2, 20, 50, 1), np.float32)
    img[:, :, 10] = 1.0
    got = views.views(img, 7).numpy().reshape(7, 2, 20, 50, 1)
    np.testing.assert_array_equal(got[0], img)
    np.testing.assert_allclose(got[5][:, :, 11, 0], 1.0, atol=1e-5)  # shifted right
    np.testing.assert_allclose(got[6][:, :, 9, 0], 1.0, atol=1e-5)  # shifted left
    bar = np.zeros((1, 41, 41, 1), np.float32)
    bar[:, 20, :] = 1.0  # a horizontal bar through the centre row
    turned = views.views(bar, 2).numpy()[1, ..., 0]
    # 5 degrees clockwise on screen: 18 px right of the centre the bar is 18 tan(5 deg) lower
    rows = np.arange(41) + 0.5
    end = (turned[:, 38] * rows).sum() / turned[:, 38].sum()
    assert end - 20.5 == pytest.approx(18 * np.tan(np.radians(5)), abs=0.1)
    stacked = np.arange(6, dtype=np.float32)  # 3 views of 2 images
    np.testing.assert_allclose(views.mean_over_views(stacked, 3).numpy(), [2.0, 3.0])
    np.testing.assert_array_equal(views.views(img, 1).numpy(), img)  # one view: the crop
    for bad in (0, len(views.VIEWS) + 1, 2.5):
        with pytest.raises(ValueError, match="views"):
            views.views(img, bad)


def test_posthoc_refuses_bad_runs_and_never_overwrites(tmp_path):
    from tf_boneage.training import posthoc

    assert posthoc.main([str(tmp_path), "--out", str(tmp_path / "v")]) == 2  # not a run
    assert not (tmp_path / "v").exists()
    with pytest.raises(ValueError, match="beside the run"):
        posthoc.run(tmp_path, tmp_path)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "predictions.csv").write_text("kept")
    with pytest.raises(FileExistsError):
        posthoc.run(tmp_path, tmp_path / "v")
    assert (tmp_path / "v" / "predictions.csv").read_text() == "kept"
    with pytest.raises(ValueError, match="views"):
        posthoc.run(tmp_path, tmp_path / "w", tta=0)
