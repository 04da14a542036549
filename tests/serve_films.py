"""Films for the ``tf-boneage serve`` tests, made here (nothing downloaded): phantoms the
shipped model accepts, a film that is not a hand, and broken files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from tf_boneage.data import io, synthetic

#: phantom seeds tried in order (512 x 400 px, augmented as the generator draws them)
SEEDS = range(1, 13)


def phantom(seed: int) -> synthetic.Phantom:
    rng = np.random.default_rng(seed)
    age = float(rng.uniform(60, 200))
    return synthetic.render(age, bool(seed % 2), rng, size=(512, 400))


def accepted_phantom(loaded, out: Path, skip: int = 0) -> tuple[Path, str]:
    """A 16-bit PNG phantom the SavedModel ``loaded`` accepts, upright, written to
    ``out``, and its sex; ``skip`` passes over that many accepted ones first. Fails (with
    what was tried) when none of :data:`SEEDS` is accepted: a model that turns away every
    phantom needs other films here."""
    import tensorflow as tf

    from tf_boneage.inference import predict

    fn = loaded.signatures["serving_default"]
    tried = []
    for seed in SEEDS:
        ph = phantom(seed)
        png = io.png16_bytes(ph.image)
        out_ = fn(image_bytes=tf.constant([png]), male=tf.constant([float(ph.male)]))
        o = {k: v.numpy()[0] for k, v in out_.items()}
        reason = predict.reason_of(o)
        turned = predict.orientation_flags(o)
        tried.append(f"seed {seed}: {reason or turned or 'accepted'}")
        if not reason and not turned:
            if skip:
                skip -= 1
                continue
            out.write_bytes(png)
            return out, "M" if ph.male else "F"
    raise AssertionError("no phantom accepted by the model; tried " + "; ".join(tried))


def non_hand(out: Path) -> Path:
    """A 16-bit PNG of smooth blobs on a dark ground: an image, but not of a hand."""
    y, x = np.mgrid[0:400, 0:320] / 400.0
    img = 0.1 + 0.5 * np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.02)
    img += 0.3 * np.exp(-((x - 0.2) ** 2 + (y - 0.2) ** 2) / 0.005)
    io.write_png(out, np.clip(img, 0, 1).astype(np.float32), bits=16)
    return out


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny IDAT and IEND:
    a decompression bomb's header, caught before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )
