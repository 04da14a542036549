import numpy as np
import pandas as pd
import pytest

from tf_boneage.data import split


def _table(n, seed=0, start=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"id{k}" for k in range(start, start + n)],
            "boneage": rng.integers(1, 229, n).astype(float),
            "male": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        }
    )


def test_exact_sizes_and_determinism():
    t = _table(2000)
    a = split.assign_split(t, {"val": 300, "test": 100}, seed=1)
    assert (a == "val").sum() == 300 and (a == "test").sum() == 100
    assert a.equals(split.assign_split(t, {"val": 300, "test": 100}, seed=1))
    assert not a.equals(split.assign_split(t, {"val": 300, "test": 100}, seed=2))
    # the result depends on the ids, not on the row order
    shuffled = t.sample(frac=1.0, random_state=0)
    b = split.assign_split(shuffled, {"val": 300, "test": 100}, seed=1)
    assert b.reindex(t.index).equals(a)


def test_stratified_by_sex_and_age_band():
    t = _table(3000)
    a = split.assign_split(t, {"val": 600})
    groups = split.strata(t)
    frac = (a == "val").groupby(groups).mean()
    sizes = groups.value_counts()
    # largest-remainder quotas: each stratum is within one image of its proportional share
    for stratum, f in frac.items():
        assert abs(f * sizes[stratum] - 0.2 * sizes[stratum]) <= 1.0


def test_stable_when_rows_are_added():
    old = _table(1000)
    old["split"] = split.assign_split(old, {"val": 200})
    grown = pd.concat([old.drop(columns="split"), _table(500, seed=9, start=1000)])
    new = split.assign_split(grown, {"val": 200}, previous=old[["id", "split"]])
    assert new.iloc[:1000].tolist() == old["split"].tolist()
    added = new.iloc[1000:]
    assert 0.14 < (added == "val").mean() < 0.26  # same 20 % proportion for new rows


def test_hash_unit_is_uniform_and_seeded():
    u = split.hash_unit([str(k) for k in range(5000)], seed=0)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    assert not np.allclose(u, split.hash_unit([str(k) for k in range(5000)], seed=1))


@pytest.mark.parametrize("holdout", [{"val": 11}, {"val": -1}, {"train": 3}])
def test_invalid_holdouts(holdout):
    with pytest.raises(ValueError, match=str(list(holdout.values())[0])):
        split.assign_split(_table(10), holdout)


def test_split_file_round_trip(tmp_path):
    t = _table(20)
    t["split"] = split.assign_split(t, {"val": 5})
    split.save_split(t, tmp_path / "s.csv")
    back = split.load_split(tmp_path / "s.csv")
    assert back.equals(t[["id", "split"]].astype(str).reset_index(drop=True))


def test_refine_carves_a_stratified_test_out_of_val_only():
    from tf_boneage.data.split import refine

    rng = np.random.default_rng(0)
    n = 400
    table = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(n)],
            "boneage": rng.uniform(1, 228, n),
            "male": rng.random(n) < 0.5,
            "split": np.where(np.arange(n) < 100, "val", "train"),
        }
    )
    new = refine(table, "val", {"test": 50})
    assert (new[table["split"] == "train"] == "train").all()
    assert (new == "test").sum() == 50 and (new == "val").sum() == 50
    assert refine(table, "val", {"test": 50}).equals(new)  # deterministic
    with pytest.raises(ValueError, match="no rows in split 'holdout'"):
        refine(table, "holdout", {"test": 5})
