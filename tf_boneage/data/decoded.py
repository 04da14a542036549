"""Films decoded once: a uint8 store of a manifest's 8-bit images at one size, read back by rows
in every later epoch instead of decoding their PNGs again.

A region network reads the same cached crops every epoch; decoding them is most of what its
``tf.data`` pipeline does on the host. :func:`open_store` writes the crops of the given rows once
into ``FOLDER/decoded_HxW_DIGEST.npy`` and returns it; the pipeline reads it whole into memory
where it fits (:data:`IN_MEMORY`), else by rows from disk (a
:class:`~tf_boneage.data.rowfile.RowFile`). The digest covers every row's path,
file size and modification time and the size: a store of other films, or of films rewritten
since, has another name and is never read (a stale store is refused by construction). Images
that are not 8-bit grey PNGs at exactly the asked size (they would need a resize) are not stored:
:func:`open_store` returns None and the pipeline decodes as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from tf_boneage.data.rowfile import RowFile, RowWriter

#: a store up to this many bytes is read into memory whole (the rsna100 training crops of
#: region A: 87 MB); a larger one is read by rows from disk
IN_MEMORY = 2 << 30


def reader(store: RowFile):
    """What the pipeline gathers batches from: the store's array in memory when it is at most
    :data:`IN_MEMORY` bytes, else the :class:`RowFile` itself (rows read on demand)."""
    if len(store) * store.row_bytes <= IN_MEMORY:
        return np.load(store.path)
    return store


def digest(paths, size: tuple[int, int]) -> str:
    """sha256 of the rows' paths, file sizes and modification times (in order) and ``size``."""
    h = hashlib.sha256(f"{size[0]}x{size[1]}\n".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def store_path(folder, paths, size: tuple[int, int]) -> Path:
    return Path(folder) / f"decoded_{size[0]}x{size[1]}_{digest(paths, size)[:20]}.npy"


def _read(path: str, size: tuple[int, int]) -> np.ndarray | None:
    """The 8-bit grey PNG at ``path`` of exactly ``size``, else None. PNG only: lossless, so
    OpenCV's pixels are the pipeline's TF decoder's (a JPEG's could differ by decoder)."""
    if not str(path).lower().endswith(".png"):
        return None
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint8 or img.ndim != 2 or img.shape != tuple(size):
        return None
    return img


def open_store(paths, size: tuple[int, int], folder, progress: bool = True) -> RowFile | None:
    """The store of ``paths`` (in order) at ``size`` (h, w) in ``folder``, written first if
    it is not there; None when a file is not an 8-bit grey PNG / JPEG of exactly ``size``."""
    paths = [str(p) for p in paths]
    size = (int(size[0]), int(size[1]))
    if not paths:
        return None
    path = store_path(folder, paths, size)
    if path.is_file():
        return RowFile(path)
    first = _read(paths[0], size)
    if first is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = RowWriter(path, (len(paths), *size, 1), np.uint8)
    from tqdm import tqdm

    block = []
    for p in tqdm(paths, desc=f"decode once ({path.name})", unit="film", disable=not progress):
        img = _read(p, size)
        if img is None:
            writer.file.close()
            writer.partial.unlink(missing_ok=True)
            return None
        block.append(img[..., None])
        if len(block) == 1024:
            writer.write(np.stack(block))
            block = []
    if block:
        writer.write(np.stack(block))
    return writer.close()
