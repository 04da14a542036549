"""``tf-boneage serve`` under a bounded load on 127.0.0.1: requests per second, every request
answered, and the server's peak memory.

    python benchmarks/web_load.py --film ../shared/data/rsna100/images/1377.png --sex M

Starts the real command (``python -m tf_boneage.cli serve``, the shipped model unless
``--model``) on a free port, then sends ``--requests`` requests ``--concurrency`` at a time,
first TF Serving's REST ``:predict`` (the film as base64 JSON), then the page's ``POST
/predict`` (multipart, the row and the overlay PNG). Reports per kind: requests/s, answered /
sent, HTTP statuses, median and 95th-percentile latency, and the server's peak resident memory
(VmHWM from /proc, Linux). Without ``--film``: a phantom the server accepts.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine, table

from tf_boneage.serve.client import multipart


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(url: str, body: bytes, kind: str) -> tuple[int, float]:
    start = time.perf_counter()
    req = urllib.request.Request(url, body, {"content-type": kind})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - start


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(url, body, kind, n, concurrency) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda _: _send(url, body, kind), range(n)))
    wall = time.perf_counter() - start
    times = sorted(t for _, t in answers)
    statuses = Counter(s for s, _ in answers)
    return {
        "requests/s": n / wall,
        "answered": f"{sum(statuses.values())}/{n}",
        "statuses": ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
        "median s": statistics.median(times),
        "p95 s": times[int(0.95 * (len(times) - 1))],
    }


def _phantom(base: str, tmp: Path) -> tuple[Path, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serve_films import SEEDS, phantom

    from tf_boneage.data import io

    film = tmp / "phantom.png"
    for seed in SEEDS:
        ph = phantom(seed)
        film.write_bytes(io.png16_bytes(ph.image))
        sex = "M" if ph.male else "F"
        body, kind = multipart(film, {"sex": sex})
        req = urllib.request.Request(base + "/predict", body, {"content-type": kind})
        with urllib.request.urlopen(req, timeout=600) as r:
            if json.loads(r.read())["status"] == "ok":
                return film, sex
    raise SystemExit("no phantom accepted by the model: pass --film")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--film", default=None, help="default: a phantom the model accepts")
    parser.add_argument("--sex", default="M", choices=("M", "F"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    port = _free_port()
    cmd = [sys.executable, "-m", "tf_boneage.cli", "serve", "--port", str(port)]
    if args.model:
        cmd += ["--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log = open(tmp / "serve.log", "w")  # noqa: SIM115 (open while the server runs)
        server = subprocess.Popen(cmd, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(480):
                try:
                    with urllib.request.urlopen(base + "/api/model", timeout=5) as r:
                        name = json.loads(r.read())["name"]
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None:
                        raise SystemExit((tmp / "serve.log").read_text()) from None
                    time.sleep(0.5)
            film, sex = (Path(args.film), args.sex) if args.film else _phantom(base, tmp)
            rest = json.dumps(
                {"instances": [{"image_bytes": {"b64": base64.b64encode(film.read_bytes()).decode()},
                                "male": float(sex == "M")}]}
            ).encode()  # fmt: skip
            page_body, page_kind = multipart(film, {"sex": sex})
            film_text = f"{film.name} ({film.stat().st_size / 1e3:.0f} kB, sex {sex})"
            rows = []
            for label, url, body, kind in (
                ("REST :predict", f"{base}/v1/models/{name}:predict", rest, "application/json"),
                ("POST /predict + overlay", f"{base}/predict", page_body, page_kind),
            ):
                _send(url, body, kind)  # warm-up: the signature's first trace
                rows.append({"requests": label, **_load(url, body, kind, args.requests,
                                                         args.concurrency)})  # fmt: skip
            peak = _peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    print(f"machine: {machine()}; {args.requests} requests, {args.concurrency} at a time; "
          f"film {film_text}")  # fmt: skip
    print(table(rows, ["requests", "requests/s", "answered", "statuses", "median s", "p95 s"]))
    print(f"server peak resident memory: {peak:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
