"""Hide TensorFlow's C++ start-up lines (``cuInit`` errors on machines without a GPU, CUDA
stubs, CPU-feature and oneDNN notices) from a command's stderr.

They are written before ``absl`` logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not
reach them. :func:`filter_stderr` puts a pipe in front of file descriptor 2 and drops only
lines that match :data:`NOISE`; everything else (tracebacks, warnings, progress bars, which
end in ``\\r``) passes through unchanged and at once. ``tf-boneage --verbose`` skips it.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda_driver|cpu_feature_guard"
    rb"|To enable the following instructions|oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS"
    rb"|Unable to register cu(DNN|FFT|BLAS)|computation_placer|port\.cc.*oneDNN"
)


def keep(text: bytes) -> bytes:
    """``text`` without the lines that match :data:`NOISE` (line ends kept)."""
    lines = text.splitlines(keepends=True)
    return b"".join(line for line in lines if not NOISE.search(line))


def filter_stderr() -> None:
    """Route file descriptor 2 through a filtering thread for the rest of the process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    real = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        buffer = b""
        while chunk := os.read(read_end, 65536):
            buffer += chunk
            cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
            if cut >= 0:
                os.write(real, keep(buffer[: cut + 1]))
                buffer = buffer[cut + 1 :]
        if buffer:
            os.write(real, keep(buffer))

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the pump sees its end
        thread.join(timeout=2)

    atexit.register(restore)
