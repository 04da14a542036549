"""Arrays too large to hold, kept in an ``.npy`` file and read a few rows at a time.

A training step that needs every film's small copy (the landmark step's 512 px inputs: 1 MB a
film) writes them here as they are made (:class:`RowWriter`) and reads back only the rows of
one batch (:class:`RowFile`), with plain file reads: nothing of the file is mapped into the
process, so its resident memory is set by the batch, not by the number of rows (a memory map
would count every page read into the process's resident set). The file is a standard ``.npy``
(``np.load`` reads it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


class RowWriter:
    """Write an (N, ...) float32 array row block by row block to ``path`` (``path.PID.partial``
    until :meth:`close`, then renamed: a file at ``path`` is always complete, and two processes
    writing the same store, as region runs trained at once may, never write one file)."""

    def __init__(self, path, shape: tuple, dtype=np.float32):
        self.path = Path(path)
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
        self.partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        self.file = open(self.partial, "wb")  # noqa: SIM115  (open until close())
        header = {"descr": self.dtype.str, "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(
                f"{self.path}: rows of {block.shape} after {self.rows} of {self.shape}"
            )
        self.file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> RowFile:
        self.file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written of {self.shape[0]}")
        self.partial.replace(self.path)
        return RowFile(self.path)


class RowFile:
    """Rows of an ``.npy`` file read on demand: ``f[i]``, ``f[[i, j, ...]]``, ``f[a:b]`` give
    in-memory arrays in the order asked; ``shape``, ``dtype``, ``len``."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not read by rows")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        rows = np.asarray(index, np.int64)
        if rows.ndim == 0:
            return self[rows[None]][0]
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"{self.path}: rows {rows} out of {len(self)}")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        for k, r in enumerate(rows):
            data = os.pread(self.fd, self.row_bytes, self.offset + int(r) * self.row_bytes)
            out[k] = np.frombuffer(data, self.dtype).reshape(self.shape[1:])
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown os may be gone
            self.close()
