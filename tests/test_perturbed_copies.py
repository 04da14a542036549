"""Invisibly changed copies of films for training, and caches of one chain joined."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from tf_boneage.data import io
from tf_boneage.training import perturbed_copies as pc


def test_each_change_is_small_and_keeps_the_film():
    rng = np.random.default_rng(0)  # a smooth film: a change of a pixel or a degree is small
    img = cv2.GaussianBlur(rng.uniform(0.2, 0.8, (40, 30)), (0, 0), 3)
    img = np.round((img - img.min()) / np.ptp(img) * 0.6 * 255 + 0.2 * 255) / 255
    seen = set()
    for seed in range(40):
        what, film = pc.changed(img, np.random.default_rng([0, seed]))
        seen.add(what.split()[0])
        if isinstance(film, bytes):  # JPEG: the file a camera or PACS would write
            film = cv2.imdecode(np.frombuffer(film, np.uint8), cv2.IMREAD_GRAYSCALE) / 255.0
        assert film.shape == img.shape and film.min() >= 0 and film.max() <= 1, what
        if what.startswith("noise"):
            assert np.abs(film - img).max() <= 1 / 255 + 1e-9
        if what == "shift across":
            np.testing.assert_array_equal(film[:, 1:], img[:, :-1])
        assert np.abs(film - img).mean() < 0.03, what  # the same film, changed a little
    assert seen == {"JPEG", "noise", "shift", "turn", "blur"}


def _cache(folder, ids, chain):
    folder.mkdir()
    (folder / "chain.json").write_text(json.dumps(chain))
    rows = [{"id": i, "split": "train", "region_B_path": f"region_B/{i}.png"} for i in ids]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)


def test_caches_of_one_chain_are_joined_with_absolute_paths(tmp_path):
    _cache(tmp_path / "a", ["1", "2"], {"frame": [104, 80]})
    _cache(tmp_path / "b", ["1_p"], {"frame": [104, 80]})
    table = pc.combine([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert table["id"].tolist() == ["1", "2", "1_p"]
    assert table["region_B_path"].tolist()[2] == str(tmp_path / "b" / "region_B" / "1_p.png")
    assert json.loads((tmp_path / "out" / "chain.json").read_text()) == {"frame": [104, 80]}
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 3
    _cache(tmp_path / "c", ["3"], {"frame": [52, 40]})
    with pytest.raises(ValueError, match="not built by one chain"):
        pc.combine([tmp_path / "a", tmp_path / "c"], tmp_path / "out2")
    with pytest.raises(ValueError, match="ids repeat"):
        pc.combine([tmp_path / "a", tmp_path / "a"], tmp_path / "out3")


def test_the_command_writes_one_copy_per_film_of_the_split(tmp_path):
    rows = []
    for k in range(4):
        path = tmp_path / f"f{k}.png"
        path.write_bytes(io.png16_bytes(np.full((20, 16), 0.2 + 0.1 * k)))
        rows.append({"id": str(k), "image_path": str(path), "boneage": 100.0 + k,
                     "male": k % 2 == 0, "split": "train" if k < 3 else "val"})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "copies"
    assert pc.main(["--manifest", str(tmp_path / "m.csv"), "--sex", "male", "--out", str(out)]) == 0
    made = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert made["id"].tolist() == ["0_p", "2_p"] and made["boneage"].tolist() == [100.0, 102.0]
    assert all(io.load_image(p).shape == (20, 16) for p in made["image_path"])
    assert (tmp_path / "f0.png").read_bytes() == io.png16_bytes(np.full((20, 16), 0.2))
