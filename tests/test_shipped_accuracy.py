"""The shipped model on real films, guarded: intact, its `test` MAE as its model card says, every
film's age and QC decision as the golden file holds them, a perturbed chain caught, and turned
or mirrored films within the card's robustness figures. Real-data tests skip where
../shared/data is absent."""

import dataclasses
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from tf_boneage.export import saved_model, shipped
from tf_boneage.inference import golden

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "boneage_rsna100_test.csv"
CARD = ROOT / "saved_models" / shipped.NAME / "MODEL_CARD.md"
#: the model card's worst cost of a quarter turn or flip on the films QC accepts (+6 %, 200
#: `test` films, benchmarks/robustness.py) plus the spread of a 20-film MAE ratio
ORIENTATION_COST_LIMIT = 0.06 + 0.20


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    return shipped.locate()


def test_the_shipped_model_is_in_the_checkout_and_intact(shipped_model):
    assert shipped_model == ROOT / "saved_models" / shipped.NAME / "2"
    assert saved_model.verify(shipped_model) == []
    meta = json.loads((shipped_model / "assets.extra" / saved_model.METADATA_FILE).read_text())
    assert meta["name"] == shipped.NAME and meta["training"]["preset"] == "rsna100"
    assert meta["training"]["counts"] == {"test": 500, "train": 10464, "val": 500}
    assert not shipped.trained_on_synthetic(meta)


def test_the_model_card_states_the_golden_mae():
    summary = json.loads(GOLDEN.with_suffix(".json").read_text())
    card = CARD.read_text()
    found = re.search(r"MAE on all 500 `test` films[^*]*\*\*([0-9.]+)\*\*", card)
    assert found, "the model card states no test MAE"
    assert float(found.group(1)) == pytest.approx(summary["mae_all_films"], abs=0.005)


def test_moved_names_each_film_that_moved_or_changed_its_verdict():
    ref = golden.table(
        [
            {"file": "a/1.png", "sex": "M", "true_bone_age_months": 100.0, "status": "ok",
             "bone_age_months": 110.0},
            {"file": "a/2.png", "sex": "F", "true_bone_age_months": 50.0, "status": "ok",
             "bone_age_months": 55.0},
        ]
    )  # fmt: skip
    now = ref.copy()
    assert golden.moved(ref, now) == []
    now.loc[0, "bone_age_months"] = 110.6
    now.loc[1, "bone_age_months"] = 55.4
    now.loc[1, "status"] = "rejected"
    assert golden.moved(ref, now) == ["1: 110.00 -> 110.60 months (+0.60)", "2: QC ok -> rejected"]
    assert golden.mae(ref) == pytest.approx(7.5)


@pytest.mark.realdata
@pytest.mark.slow
def test_predict_on_every_test_film_reproduces_the_golden_file(shipped_model, shared_data):
    reqs = golden.requests(shared_data, ROOT / golden.SPLIT_FILE)
    assert len(reqs) == 500
    now = golden.predict_table(shipped_model, reqs)
    ref = golden.read(GOLDEN)
    summary = json.loads(GOLDEN.with_suffix(".json").read_text())
    assert golden.mae(now) == pytest.approx(summary["mae_all_films"], abs=0.05)
    assert golden.moved(ref, now) == []


@pytest.mark.realdata
@pytest.mark.slow
def test_a_chain_changed_on_purpose_is_caught_by_the_golden_file(shipped_model, shared_data):
    """The shipped graph rebuilt with one landmark look instead of its two: the golden file
    names the films whose age moved by more than half a month."""
    from tf_boneage.export import rebuild
    from tf_boneage.inference import batch

    graph = rebuild.rebuild(shipped_model)
    pre = graph.preprocessor
    assert pre.config.landmark_passes == 2
    pre.config = dataclasses.replace(pre.config, landmark_passes=1)
    perturbed = types.SimpleNamespace(signatures=saved_model.signatures(graph))
    reqs = golden.requests(shared_data, ROOT / golden.SPLIT_FILE, limit=24)
    now = golden.table(batch.run(perturbed, reqs, 8, force=True))
    lines = golden.moved(golden.read(GOLDEN), now)
    assert lines, "one landmark look instead of two moved no film"
    assert all(re.match(r"\d+: ", line) for line in lines)


@pytest.mark.realdata
@pytest.mark.slow
def test_turned_and_mirrored_films_stay_within_the_cards_robustness(
    shipped_model, shared_data, tmp_path
):
    """20 `test` films in all 8 orientations (4 quarter turns, each also mirrored): on the
    films QC accepts, the MAE against the same films untouched within the card's worst
    quarter-turn or flip cost plus the noise of 20 films."""
    import cv2

    from tf_boneage.export import load
    from tf_boneage.inference import batch

    limit = ORIENTATION_COST_LIMIT
    reqs = golden.requests(shared_data, ROOT / golden.SPLIT_FILE, limit=20)
    ref = golden.read(GOLDEN).set_index("id")
    costs = {}
    for turns in range(4):
        for mirror in (False, True):
            made = []
            for q in reqs:
                img = cv2.imread(str(q.path), cv2.IMREAD_UNCHANGED)
                img = np.rot90(img, turns)
                img = img[:, ::-1] if mirror else img
                path = tmp_path / f"{turns}{int(mirror)}" / q.path.name
                path.parent.mkdir(exist_ok=True)
                cv2.imwrite(str(path), np.ascontiguousarray(img))
                made.append(dataclasses.replace(q, path=path))
            now = golden.table(batch.run(load.saved_model(shipped_model), made, 20, force=True))
            ok = now[now["status"] == "ok"]
            untouched = ref.loc[ok["id"], "bone_age_months"].to_numpy()
            truth = ok["true_bone_age_months"].to_numpy()
            before = np.abs(untouched - truth).mean()
            after = np.abs(ok["bone_age_months"].to_numpy() - truth).mean()
            costs[(turns, mirror)] = (after / before - 1, len(ok))
    worst = {k: v for k, v in costs.items() if v[0] > limit}
    assert not worst, costs


def test_card_rows_by_hand():
    frame = golden.table(
        [
            {"file": "1.png", "sex": "M", "true_bone_age_months": 30.0, "status": "ok",
             "bone_age_months": 32.0},
            {"file": "2.png", "sex": "F", "true_bone_age_months": 70.0, "status": "ok",
             "bone_age_months": 66.0},
            {"file": "3.png", "sex": "F", "true_bone_age_months": 200.0, "status": "rejected",
             "bone_age_months": 230.0},
        ]
    )  # fmt: skip
    rows = {r["films"]: r for r in golden.card_rows(frame)}
    assert rows["all"]["mae_all"][0] == pytest.approx(12.0)  # (2 + 4 + 30) / 3
    assert rows["all"]["mae_accepted"][0] == pytest.approx(3.0)
    assert rows["girls"]["n"] == 2 and rows["girls"]["accepted"] == 1
    assert rows["0-5 years"]["mae_all"][0] == pytest.approx(2.0)
    assert rows["5-10 years"]["mae_all"][0] == pytest.approx(4.0)
    assert rows["10-14 years"]["n"] == 0 and rows["10-14 years"]["mae_all"] is None
    assert rows["14-20 years"]["mae_accepted"] is None
    assert "| girls | 2 | 17.00 [" in golden.card_markdown(frame)
