"""A ``POST /predict`` upload with the standard library alone, for scripts and tests::

body, kind = multipart(Path("hand.png"), {"sex": "F"})
req = urllib.request.Request("http://127.0.0.1:8501/predict", body, {"content-type": kind})
row = json.load(urllib.request.urlopen(req))
"""

from __future__ import annotations

from pathlib import Path

BOUNDARY = "tfboneageformboundary"


def multipart(film: Path, fields: dict) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart/form-data upload: ``fields`` (name -> text, e.g.
    ``sex``, ``birth_date``) and the file ``film`` as the field ``file``."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{Path(film).name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = b"".join(parts) + head + Path(film).read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"
