"""``tf-boneage serve`` as a user runs it: the real command (the shipped model) in its own
process, its page driven in headless Chromium (Debian's ``chromium`` + ``chromium-driver``
through Selenium, nothing downloaded), a bounded load on its REST API, and the README's TF
Serving request run against it.

Skipped when Chromium or its driver is missing, unless ``TF_BONEAGE_BROWSER=required`` (as
``.ci/run`` sets after installing them): then a missing browser fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from serve_films import SEEDS, non_hand, phantom

from tf_boneage.inference import predict
from tf_boneage.serve.client import multipart

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        text = f"{missing} not installed (apt install chromium chromium-driver)"
        if os.environ.get("TF_BONEAGE_BROWSER") == "required":
            pytest.fail(text)
        pytest.skip(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """``tf-boneage serve --port P`` started as a user starts it; ``(base URL, films folder,
    the process's stderr file)``; stopped (SIGTERM) after the module."""
    port = _free_port()
    tmp = tmp_path_factory.mktemp("live")
    log = tmp / "serve.log"
    cmd = [sys.executable, "-m", "tf_boneage.cli", "serve", "--port", str(port)]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                _get(base + "/api/model")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, tmp, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def films(live_server):
    """``(a phantom the server accepts upright, its sex, a non-hand)`` as files beside the
    server's run (the phantoms of :mod:`serve_films`, judged by the server itself)."""
    from tf_boneage.data import io

    base, tmp, _ = live_server
    film, tried = tmp / "hand.png", []
    for seed in SEEDS:
        ph = phantom(seed)
        film.write_bytes(io.png16_bytes(ph.image))
        sex = "M" if ph.male else "F"
        row = _post_file(base, film, {"sex": sex})
        tried.append(f"{seed}: {row['reason'] or row['flags']}")
        if row["status"] == "ok" and "corrected" not in row["flags"]:
            return film, sex, non_hand(tmp / "blobs.png")
    pytest.fail("no phantom accepted by the served model; tried " + "; ".join(tried))


@pytest.fixture(scope="module")
def browser(live_server):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = live_server[1] / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1400",
        f"--user-data-dir={live_server[1] / 'chrome-profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver, downloads
    finally:
        driver.quit()


def _wait(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_a_film_dropped_on_the_page_is_read_as_the_api_reads_it(live_server, films, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = live_server[0]
    driver, downloads = browser
    film, sex, blobs = films
    driver.get(base + "/")
    _wait(driver, lambda d: "boneage_rsna100" in d.find_element(By.ID, "model").text)
    Select(driver.find_element(By.ID, "default-sex")).select_by_value(sex)
    driver.find_element(By.ID, "files").send_keys(f"{film}\n{blobs}")
    rows = driver.find_elements(By.CSS_SELECTOR, "#pending tbody tr")
    assert [r.get_attribute("data-name") for r in rows] == ["hand.png", "blobs.png"]
    birth = rows[0].find_element(By.CSS_SELECTOR, "input.birth")
    study = rows[0].find_element(By.CSS_SELECTOR, "input.study")
    for field, value in ((birth, "2010-01-01"), (study, "2020-01-01")):  # set as a user types
        driver.execute_script(
            "arguments[0].value = arguments[1];arguments[0].dispatchEvent(new Event('change'));",
            field,
            value,
        )
    driver.find_element(By.ID, "read").click()
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 2)
    assert "Read 2 films" in driver.find_element(By.ID, "progress-text").text
    ok, rejected = driver.find_elements(By.CSS_SELECTOR, "#results .result")

    # the accepted film: the age as the API gives it for the same file, sex and dates
    fields = {"sex": sex, "birth_date": "2010-01-01", "study_date": "2020-01-01"}
    api = _post_file(base, film, fields)
    age = api["bone_age_months"]
    text = ok.find_element(By.CSS_SELECTOR, ".age").text
    m = int(round(age))
    assert text.startswith(f"{m // 12} years {m % 12} month") and f"({age:.1f} months)" in text
    assert ok.find_element(By.CSS_SELECTOR, ".qc").text == "QC: accepted"
    low, high = api["interval_low_months"], api["interval_high_months"]
    assert f"90 % interval: {low:.0f}-{high:.0f} months" in ok.text
    assert ok.find_element(By.CSS_SELECTOR, "svg.axis rect.band")
    assert f"SDS {api['sds_greulich_pyle']:+.2f}" in ok.find_element(By.CSS_SELECTOR, ".sds").text
    image = ok.find_element(By.CSS_SELECTOR, "img.overlay")
    natural = driver.execute_script("return arguments[0].naturalWidth", image)
    assert natural > 600

    # the non-hand: the reason, no age, until the user asks for one
    assert "QC rejected this film:" in rejected.find_element(By.CSS_SELECTOR, ".qc").text
    assert not rejected.find_elements(By.CSS_SELECTOR, ".age")
    driver.find_element(By.ID, "results").screenshot(str(_artifact("serve_results.png")))
    rejected.find_element(By.CSS_SELECTOR, "button.force").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result.rejected .age"))
    forced = driver.find_element(By.CSS_SELECTOR, "#results .result.rejected")
    assert "QC rejected: age given by --force" in forced.text

    # the overlay at full resolution
    image.click()
    zoom = driver.find_element(By.ID, "zoom-img")
    _wait(driver, lambda d: zoom.is_displayed())
    assert driver.execute_script("return arguments[0].clientWidth", zoom) == natural
    driver.save_screenshot(str(_artifact("serve_zoom.png")))
    driver.find_element(By.ID, "zoom").click()  # the dark margin closes it
    _wait(driver, lambda d: not d.find_element(By.ID, "zoom").is_displayed())
    driver.save_screenshot(str(_artifact("serve_page.png")))

    # the CSV: predict's columns, one row per film, the ages shown
    driver.find_element(By.ID, "csv").click()
    path = downloads / "boneage_results.csv"
    _wait(driver, lambda d: path.is_file() and path.stat().st_size > 0, timeout=30)
    table = pd.read_csv(path)
    assert list(table.columns) == list(predict.COLUMNS)
    assert table["file"].tolist() == ["hand.png", "blobs.png"]
    assert table["bone_age_months"][0] == pytest.approx(age)
    assert table["status"].tolist() == ["ok", "rejected"]


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def _post_file(base: str, path: Path, fields: dict) -> dict:
    body, kind = multipart(path, fields)
    req = urllib.request.Request(base + "/predict", body, {"content-type": kind})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_two_hundred_rest_requests_eight_at_a_time_are_all_answered(live_server, films):
    base, _, _ = live_server
    film = films[0]
    body = json.dumps(
        {"instances": [{"image_bytes": {"b64": base64.b64encode(film.read_bytes()).decode()},
                        "male": 1}]}
    ).encode()  # fmt: skip

    def one(_):
        req = urllib.request.Request(
            base + "/v1/models/boneage_rsna100:predict", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())["predictions"][0]["bone_age_months"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(200)))
    assert [s for s, _ in answers] == [200] * 200
    ages = {round(a, 4) for _, a in answers}
    assert len(ages) == 1  # the same film, the same age, whatever the interleaving


def test_the_readmes_tf_serving_request_works_against_it(live_server, films):
    """The README's request lines, run as written; only the port differs (the test's server
    listens on a free one) and the film is the test's."""
    base, tmp, _ = live_server
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- serve-rest -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README: the TF Serving request block after <!-- serve-rest --> is missing"
    port = base.rsplit(":", 1)[1]
    script = block.group(1).replace("localhost:8501", f"localhost:{port}")
    assert films[0] == tmp / "hand.png"  # the README's file name, in the folder it runs in
    r = subprocess.run(["bash", "-e", "-c", script], cwd=tmp, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["predictions"][0]["bone_age_months"] > 0
