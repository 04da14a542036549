"""Load time and memory of an end-to-end SavedModel, beside its TFLite files' sizes.

    python benchmarks/savedmodel_load.py saved_models/boneage/1 [--tflite DIR]

Each measurement runs in a fresh child process (nothing cached by an earlier load): the
seconds of ``tf.saved_model.load``, the seconds of the first ``serving_default`` call on one
phantom (tracing and kernel set-up included), the peak resident memory of the process after
each (``ru_maxrss``, with the ~0.6 GB that importing TensorFlow costs subtracted as the peak
before the load), the size of ``variables/`` and whether any optimizer variable is in the export.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import machine, table

CHILD = r"""
import json, resource, sys, time
import numpy as np, tensorflow as tf, cv2
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: KiB)
base = rss()
t = time.perf_counter(); m = tf.saved_model.load(sys.argv[1]); load = time.perf_counter() - t
after_load = rss()
img = np.zeros((256, 200), np.uint8); cv2.ellipse(img, (100, 150), (60, 90), 0, 0, 360, 180, -1)
png = cv2.imencode(".png", img)[1].tobytes()
t = time.perf_counter()
m.signatures["serving_default"](image_bytes=tf.constant([png]), male=tf.constant([1.0]))
first = time.perf_counter() - t
print(json.dumps({"load_s": load, "first_call_s": first, "rss_load_mb": after_load - base,
                  "rss_first_call_mb": rss() - base}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a SavedModel version folder")
    parser.add_argument("--tflite", default=None, help="folder of its .tflite files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from tf_boneage.export.saved_model import training_variables

    model = Path(args.model)
    runs = []
    for _ in range(args.repeats):
        r = subprocess.run([sys.executable, "-c", CHILD, str(model)], capture_output=True,
                           text=True, check=True)  # fmt: skip
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    variables = sum(f.stat().st_size for f in (model / "variables").rglob("*") if f.is_file())
    rows = [
        {
            "artifact": "SavedModel",
            "size (MB)": variables / 1e6,
            "load (s)": best["load_s"],
            "first call (s)": best["first_call_s"],
            "memory after load (MB)": best["rss_load_mb"],
            "after first call (MB)": best["rss_first_call_mb"],
        }
    ]
    for path in sorted(Path(args.tflite).glob("*.tflite")) if args.tflite else []:
        rows.append({"artifact": f"TFLite {path.stem}", "size (MB)": path.stat().st_size / 1e6,
                     "load (s)": "", "first call (s)": "", "memory after load (MB)": "",
                     "after first call (MB)": ""})  # fmt: skip
    print(f"{machine()}; best of {args.repeats} fresh processes; {model}")
    print(
        f"optimizer / training-only variables in the export: {training_variables(model) or 'none'}"
    )
    print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
