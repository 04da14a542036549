"""An export rebuilt from itself (graph.json + its variables) answers as the export does; its
files are recorded by SHA-256 and a changed file is named."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tiny_graph import _images, _png

from tf_boneage.export import load, rebuild, saved_model


def _answers(loaded, images, male):
    fn = loaded.signatures["serving_default"]
    out = fn(
        image_bytes=tf.constant([_png(i) for i in images]),
        male=tf.constant(male, tf.float32),
    )
    return {k: v.numpy() for k, v in out.items()}


def test_the_record_names_every_network_and_the_ensemble(exported):
    graph, path, _, _ = exported
    doc = rebuild.read_record(path)
    assert doc["members"] == ["A_reg_sex", "A_cls_sex", "B_reg_sex", "B_cls_sex"]
    nets = set(doc["networks"])
    assert {"unet", "landmarks", "A_reg_male", "A_reg_female", "B_cls_female"} <= nets
    assert "orientation" not in nets  # the tiny chain has no classifier
    assert doc["params"]["female"]["weights"] == pytest.approx([0.1, 0.5, 0.2, 0.2])
    assert doc["params"]["female"]["bias"] == -2.0
    assert doc["chain_config"]["region_sizes"]["A"] == [32, 24]


@pytest.mark.slow
def test_rebuilt_graph_and_its_reexport_answer_as_the_export(exported, loaded_export, tmp_path):
    _, path, report, _ = exported
    images, male = _images(3, seed=5), [1.0, 0.0, 1.0]
    want = _answers(loaded_export, images, male)

    rebuilt = rebuild.rebuild(path)
    # the calibration's per-sex factor travelled as a variable, not as a constructor argument
    scale = report["scale"]
    np.testing.assert_allclose(
        rebuilt.std_scale.numpy(), [scale["male"], scale["female"]], rtol=1e-6
    )

    again = rebuild.reexport(path, tmp_path / "boneage")
    assert again == tmp_path / "boneage" / "1"
    got = _answers(tf.saved_model.load(str(again)), images, male)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)
    meta = load.metadata(again)
    assert meta["reexported_from"]["path"] == str(path)
    assert meta["test"] is True  # the source's own metadata kept
    assert saved_model.verify(again) == []


def test_verify_names_a_changed_a_missing_and_an_unrecorded_file(exported, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(exported[1], copy)
    assert saved_model.verify(copy) == []
    with open(copy / "saved_model.pb", "ab") as fh:
        fh.write(b"\0")
    (copy / "fingerprint.pb").unlink()
    (copy / "variables" / "extra.bin").write_bytes(b"x")
    assert saved_model.verify(copy) == [
        "fingerprint.pb: missing",
        "variables/extra.bin: not in the record",
        "saved_model.pb: SHA-256 differs from the record",
    ]


def test_an_export_without_a_record_or_of_another_format_is_refused(exported, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(exported[1], copy)
    record = copy / "assets.extra" / rebuild.GRAPH_FILE
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "format": rebuild.FORMAT + 1}))
    with pytest.raises(ValueError, match="graph format 2, this version reads 1"):
        rebuild.rebuild(copy)
    record.unlink()
    with pytest.raises(ValueError, match="cannot be rebuilt from itself"):
        rebuild.rebuild(copy)


def test_an_export_older_than_a_qc_limit_is_rebuilt_and_the_limit_fitted(exported, tmp_path):
    from tiny_graph import _labelled_rows

    from tf_boneage.export import calibration

    copy = tmp_path / "1"
    shutil.copytree(exported[1], copy)
    graph = rebuild.rebuild(copy)
    del graph.qc_max_steps  # the export as written before the graph had this limit
    tf.train.Checkpoint(graph).write(str(copy / "variables" / "variables"))

    older = rebuild.rebuild(copy)
    assert older.unfitted_limits == ["qc_max_steps"]
    assert float(older.qc_max_steps.numpy()) == 1.0  # passes every film until fitted
    assert rebuild.rebuild(exported[1]).unfitted_limits == []
    with pytest.raises(ValueError, match=r"holds no qc_max_steps .*--manifest"):
        rebuild.reexport(copy, tmp_path / "again")
    assert not (tmp_path / "again").exists()

    rows = _labelled_rows(tmp_path, 50, seed=8)
    fitted = calibration.fit_later_limits(older, rows, batch=25)
    steps = calibration.predict_rows(older.predict_bytes, rows, 25)["step_share"]
    assert fitted == {"qc_max_steps": calibration.step_limit(steps)}
    assert float(older.qc_max_steps.numpy()) == pytest.approx(fitted["qc_max_steps"])
    assert older.unfitted_limits == []
