"""``tf-boneage serve`` in-process: the page's API with the shipped model, every bad input of
the battery answered with a 4xx and a message, the limits, the queue, the temporary folder,
the CSV, and TF Serving's REST dialect against what the SavedModel itself answers."""

from __future__ import annotations

import base64
import io as pyio
import json
import tempfile

import anyio
import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from serve_films import accepted_phantom, non_hand, png_header_only

from tf_boneage.data import io
from tf_boneage.export import serving_client, shipped
from tf_boneage.inference import predict
from tf_boneage.inference.batch import predict_files
from tf_boneage.serve import limits, reading, tf_serving
from tf_boneage.serve.app import Settings, create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(client, app, loaded SavedModel, accepted phantom, its sex)`` with the shipped model."""
    from starlette.testclient import TestClient

    app = create_app(say=None)
    tmp = tmp_path_factory.mktemp("serve")
    film, sex = accepted_phantom(app.state.server.loaded, tmp / "hand.png")
    with TestClient(app) as client:
        yield client, app, app.state.server.loaded, film, sex


def _post(client, data: bytes, name="film.png", **form):
    return client.post("/predict", files={"file": (name, data, "image/png")}, data=form)


def test_the_page_and_its_assets_come_from_this_server_only(served):
    client = served[0]
    page = client.get("/")
    assert page.status_code == 200 and "Bone age reader" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and r.text
        # no other host: the only absolute URL is the SVG namespace (a name, never fetched)
        urls = [u for u in r.text.split() if "http://" in u or "https://" in u]
        assert all("www.w3.org/2000/svg" in u for u in urls), urls
    assert 'src="http' not in page.text and 'href="http' not in page.text
    info = client.get("/api/model").json()
    assert info["name"] == shipped.NAME and info["version"] == int(shipped.locate().name)
    assert info["columns"] == list(predict.COLUMNS) and not info["synthetic"]


def test_a_film_gets_the_same_row_as_predict_files(served, tmp_path):
    client, _, _, film, sex = served
    r = _post(client, film.read_bytes(), name="hand.png", sex=sex)
    assert r.status_code == 200, r.text
    row = r.json()
    (ref,) = predict_files([film], sex=sex)
    assert row["status"] == "ok" and row["file"] == "hand.png"
    for key in predict.COLUMNS:
        if key not in ("file", "overlay", "sex_source"):
            assert row[key] == ref[key], key
    assert (row["sex_source"], ref["sex_source"]) == ("the form", "--sex")
    assert row["interval_low_months"] <= row["bone_age_months"] <= row["interval_high_months"]
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(row["overlay_png"]), np.uint8), 1)
    assert overlay is not None and overlay.shape[0] >= 300 and overlay.shape[1] > overlay.shape[0]


def test_the_standard_library_upload_reads_as_a_browser_upload(served):
    from tf_boneage.serve.client import multipart

    client, _, _, film, sex = served
    body, kind = multipart(film, {"sex": sex, "chronological_age": "10y"})
    row = client.post("/predict", content=body, headers={"content-type": kind}).json()
    ref = _post(client, film.read_bytes(), name=film.name, sex=sex, chronological_age="10y")
    assert row == ref.json() and row["file"] == film.name


def test_dates_give_ba_minus_ca_and_sds(served):
    client, _, _, film, sex = served
    r = _post(client, film.read_bytes(), sex=sex, birth_date="2010-01-01", study_date="2020-01-01")
    row = r.json()
    chrono = 3652 / 30.4375  # days between the dates (two leap days) in mean months
    assert row["chronological_age_months"] == pytest.approx(chrono)
    assert row["ba_minus_ca_months"] == pytest.approx(row["bone_age_months"] - chrono, abs=0.01)
    assert row["sds_greulich_pyle"] is not None
    by_age = _post(client, film.read_bytes(), sex=sex, chronological_age="10y").json()
    assert by_age["chronological_age_months"] == 120.0


def test_eight_bit_png_and_jpeg_of_the_film_are_read(served, tmp_path):
    client, _, _, film, sex = served
    pixels = io.load_image(film)
    u8 = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
    for name, ext in (("film8.png", ".png"), ("film.jpg", ".jpg")):
        ok, data = cv2.imencode(ext, u8)
        r = client.post("/predict", files={"file": (name, data.tobytes())}, data={"sex": sex})
        assert r.status_code == 200 and r.json()["bone_age_months"] is not None, r.text


def test_dicom_sex_comes_from_its_header_and_its_absence_is_a_422(served, tmp_path):
    client, _, _, film, sex = served
    pixels = io.load_image(film)
    with_sex, without = tmp_path / "a.dcm", tmp_path / "b.dcm"
    io.write_dicom(with_sex, pixels, sex=sex, birth_date="20100101", study_date="20200101")
    io.write_dicom(without, pixels)
    r = client.post("/predict", files={"file": ("a.dcm", with_sex.read_bytes())})
    row = r.json()
    assert r.status_code == 200 and row["sex"] == sex and row["sex_source"] == "DICOM PatientSex"
    assert row["chronological_age_months"] == pytest.approx(3652 / 30.4375)
    r = client.post("/predict", files={"file": ("b.dcm", without.read_bytes())})
    assert r.status_code == 422 and "PatientSex" in r.json()["error"]
    r = client.post("/predict", files={"file": ("b.dcm", without.read_bytes())}, data={"sex": sex})
    assert r.status_code == 200 and r.json()["sex_source"] == "the form"


def test_a_non_hand_is_rejected_with_its_reason_and_aged_only_when_forced(served, tmp_path):
    client = served[0]
    data = non_hand(tmp_path / "blob.png").read_bytes()
    row = _post(client, data, sex="F").json()
    assert row["status"] == "rejected" and row["reason"] and row["bone_age_months"] is None
    assert row["overlay_png"] is None
    forced = _post(client, data, sex="F", force="1").json()
    assert forced["status"] == "rejected" and forced["bone_age_months"] is not None
    assert "QC rejected" in forced["flags"] and forced["overlay_png"]


def _truncated(film) -> bytes:
    return film.read_bytes()[:-200]


BAD = [
    ("empty", lambda f: b"", {"sex": "M"}, 400, "empty"),
    ("not an image", lambda f: b"just some text", {"sex": "M"}, 415, "not a PNG, JPEG or DICOM"),
    ("truncated", _truncated, {"sex": "M"}, 422, "truncated PNG"),
    ("bomb", lambda f: png_header_only(30000, 30000), {"sex": "M"}, 413, "exceeds the limit"),
    ("no sex", lambda f: f.read_bytes(), {}, 422, "sex unknown"),
    ("bad sex", lambda f: f.read_bytes(), {"sex": "X"}, 400, "sex must be M or F"),
    ("bad date", lambda f: f.read_bytes(), {"sex": "M", "birth_date": "1.2.2010",
                                           "study_date": "2020-01-01"}, 400, "not a date"),
    ("one date", lambda f: f.read_bytes(), {"sex": "M", "birth_date": "2010-01-01"}, 400, "both"),
    ("study before birth", lambda f: f.read_bytes(), {"sex": "M", "birth_date": "2020-01-01",
                                                     "study_date": "2010-01-01"}, 400, "before"),
    ("bad age", lambda f: f.read_bytes(), {"sex": "M", "chronological_age": "old"}, 400, "age"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "form", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_get_a_4xx_with_a_message(served, case, make, form, status, words):
    client, film = served[0], served[3]
    r = _post(client, make(film), name="x.png", **form)
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["file"] == "x.png"


def test_a_one_pixel_film_is_answered_not_crashed(served):
    ok, data = cv2.imencode(".png", np.full((1, 1), 128, np.uint8))
    r = _post(served[0], data.tobytes(), sex="M")
    assert r.status_code in (200, 422), r.text
    doc = r.json()
    assert doc.get("status") == "rejected" or doc.get("error"), doc


def test_malformed_requests_get_json_4xx(served):
    client = served[0]
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    r = client.post("/predict", data={"sex": "M"}, files={"other": ("a.png", b"x")})
    assert r.status_code == 400 and '"file"' in r.json()["error"]
    r = client.post(
        "/predict", content=b"--b\r\nbroken", headers={"content-type": "multipart/form-data"}
    )
    assert r.status_code == 400 and "malformed upload" in r.json()["error"]
    assert client.get("/predict").status_code == 405
    missing = client.get("/nothing/here")
    assert missing.status_code == 404 and missing.json()["error"]


def test_paths_in_a_request_are_labels_never_opened(served, tmp_path, monkeypatch):
    client, _, _, film, sex = served
    opened = []
    prepare = predict.prepare
    monkeypatch.setattr(
        predict, "prepare", lambda p, *a, **k: opened.append(p) or prepare(p, *a, **k)
    )
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = _post(client, film.read_bytes(), name="../../etc/passwd", sex=sex)
    assert r.status_code == 200 and r.json()["file"] == "passwd"
    (path,) = opened
    assert path.parent.parent == tmp_path and path.parent.name.startswith("tf_boneage_serve_")
    assert path.name == "film.png"
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone
    assert reading.label("C:\\films\\a.png") == "a.png" and reading.label("\x00\n") == "film"


def test_results_csv_has_the_columns_of_predict(served):
    client, _, _, film, sex = served
    row = _post(client, film.read_bytes(), name="hand.png", sex=sex).json()
    r = client.post("/results.csv", json={"rows": [row, {"file": "bad.png", "status": "error"}]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(pyio.StringIO(r.text))
    assert list(table.columns) == list(predict.COLUMNS)
    assert table["bone_age_months"][0] == pytest.approx(row["bone_age_months"])
    assert table["status"].tolist() == ["ok", "error"]
    assert client.post("/results.csv", json={"rows": "x"}).status_code == 400


def test_tf_serving_rest_answers_as_the_savedmodel_does(served):
    client, app, loaded, film, _ = served
    body = serving_client.rest_request([film.read_bytes()], [1.0])
    r = client.post("/v1/models/boneage_rsna100:predict", json=body)
    assert r.status_code == 200
    direct = loaded.signatures["serving_default"](
        image_bytes=tf.constant([film.read_bytes()]), male=tf.constant([1.0])
    )
    assert r.json() == tf_serving.rest_predict(loaded, json.dumps(body))[1]
    got = r.json()["predictions"][0]["bone_age_months"]
    assert got == pytest.approx(float(direct["bone_age_months"][0]), abs=1e-4)
    columnar = serving_client.rest_request([film.read_bytes()], [1.0], columnar=True)
    version = shipped.locate().name
    r = client.post(f"/v1/models/boneage_rsna100/versions/{version}:predict", json=columnar)
    assert serving_client.rest_outputs(r.json())["bone_age_months"][0] == pytest.approx(got)
    bad = client.post("/v1/models/boneage_rsna100:predict", content=b"{not json")
    assert bad.status_code == 400 and "JSON parse error" in bad.json()["error"]


def test_tf_serving_status_metadata_and_404s(served):
    client = served[0]
    version = int(shipped.locate().name)  # the one version the server holds
    assert client.get("/v1/models/boneage_rsna100").json() == tf_serving.status_body(version)
    assert client.get(f"/v1/models/boneage_rsna100/versions/{version}").status_code == 200
    meta = client.get("/v1/models/boneage_rsna100/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig["inputs"]) == {"image_bytes", "male"} and "bone_age_months" in sig["outputs"]
    spec = {"name": "boneage_rsna100", "signature_name": "", "version": str(version)}
    assert meta["model_spec"] == spec
    for url, words in (
        ("/v1/models/other", "Latest(other)"),
        (
            f"/v1/models/boneage_rsna100/versions/{version + 1}",
            f"Specific(boneage_rsna100, {version + 1})",
        ),
        ("/v1/models/boneage_rsna100/labels/stable", "version label"),
        ("/v1/models/boneage_rsna100/versions/x", "Malformed"),
    ):
        r = client.get(url)
        assert r.status_code == 404 and words in r.json()["error"], url
    assert client.post("/v1/models/boneage_rsna100:classify", json={}).status_code == 404
    assert client.get("/v1/models/boneage_rsna100:predict").status_code == 405


def test_parse_path_by_hand():
    t = tf_serving.parse_path
    assert t("/v1/models/m") == tf_serving.Target("m", None, "status")
    assert t("/v1/models/m/versions/3:predict") == tf_serving.Target("m", 3, "predict")
    assert t("/v1/models/m/versions/3/metadata") == tf_serving.Target("m", 3, "metadata")
    for bad in ("/v1/models/", "/v1/models/m:explain", "/v1/models/m/versions/3/x"):
        with pytest.raises(tf_serving.NotFound):
            t(bad)


def test_bodies_over_the_cap_get_a_json_413(served):
    from starlette.testclient import TestClient

    app = create_app(settings=Settings(max_mb=0.05), say=None)
    with TestClient(app) as client:
        r = _post(client, b"\x89PNG\r\n\x1a\n" + bytes(100_000), sex="M")
        assert r.status_code == 413 and "over the limit of 0.05 MB" in r.json()["error"]
        r = client.post("/v1/models/boneage_rsna100:predict", content=bytes(100_000))
        assert r.status_code == 413


def test_a_streamed_body_over_the_cap_is_cut_off():
    seen = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await limits.send_json(send, 200, {"read": sum(seen)})

    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 3
    sent = []

    async def run(limit):
        queue = list(chunks)

        async def receive():
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        await limits.BodyLimit(app, limit)({"type": "http", "headers": []}, receive, send)

    anyio.run(run, 100)
    assert sent[0]["status"] == 413 and seen == [60]  # the second chunk is never handed on
    assert json.loads(sent[1]["body"])["error"].startswith("request body over the limit")


def test_the_queue_runs_one_at_a_time_and_turns_away_beyond_its_bound():
    import threading
    import time

    active, peak, answers = [0], [0], []
    lock = threading.Lock()

    def work(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return i

    async def main():
        queue = limits.Queue(max_waiting=2)

        async def one(i):
            try:
                answers.append(await queue.run(work, i))
            except limits.Busy as exc:
                answers.append(str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0)
            while queue.running == 0:  # the first call holds the model
                await anyio.sleep(0.001)
            for i in range(1, 5):  # two wait behind it, two are turned away
                tg.start_soon(one, i)
        assert queue.waiting == 0 and queue.running == 0

    anyio.run(main)
    assert peak[0] == 1
    assert sorted(a for a in answers if isinstance(a, int)) == [0, 1, 2]
    assert sum(isinstance(a, str) and a.startswith("busy") for a in answers) == 2
