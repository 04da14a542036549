"""Image IO: PNG / JPEG (8 or 16 bit, grey / RGB / RGBA) and DICOM -> float32 grey in [0, 1].

One decoder for PNG and JPEG, written in TensorFlow ops (:func:`decode_image_bytes`), serves
the tf.data pipelines, the Python loader (:func:`load_image`) and, later, the exported serving
graph, so the three can never disagree. DICOM goes through pydicom (not a TF op).

Before anything is decoded, :func:`sniff` reads only the file header to refuse, with an
:class:`ImageError` naming the file: empty or truncated files, non-images, zero-sized images and
images over ``max_pixels`` (decompression bombs).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np

#: Default refusal threshold: RSNA radiographs are at most ~3000 x 2500 = 7.5 MP.
MAX_PIXELS = 50_000_000

#: ITU-R BT.601 luma weights, the same as ``tf.image.rgb_to_grayscale``.
LUMA = (0.2989, 0.5870, 0.1140)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xae\x42\x60\x82"
_JPEG_SOI = b"\xff\xd8"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the header says: ``format`` in {'png', 'jpeg', 'dicom'}, size in pixels."""

    format: str
    width: int
    height: int


@dataclasses.dataclass
class LoadedImage:
    """A decoded image: ``pixels`` float32 (H, W) in [0, 1] and DICOM ``meta`` (else empty).

    ``meta`` keys (DICOM only, when present): ``sex`` ('M' / 'F'), ``birth_date`` and
    ``study_date`` (``YYYYMMDD`` strings), ``photometric``.
    """

    pixels: np.ndarray
    meta: dict


def _png_size(path, head: bytes) -> tuple[int, int]:
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageError(path, "truncated PNG header")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _jpeg_size(path, f) -> tuple[int, int]:
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":
            byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            raise ImageError(path, "truncated JPEG: no frame header (SOF) found")
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = f.read(2)
        if len(seg) < 2:
            raise ImageError(path, "truncated JPEG segment")
        length = struct.unpack(">H", seg)[0]
        if marker in _JPEG_SOF:
            body = f.read(5)
            if len(body) < 5:
                raise ImageError(path, "truncated JPEG frame header")
            height, width = struct.unpack(">HH", body[1:5])
            return width, height
        f.seek(length - 2, os.SEEK_CUR)


def _is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def sniff(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read only the header of ``path`` and check that it is a usable image.

    Raises:
        ImageError: missing, empty, truncated, not an image, zero-sized, or over ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(256)
        if head.startswith(_PNG_SIG):
            fmt = "png"
            width, height = _png_size(path, head)
            f.seek(max(0, size - 12))
            if not f.read().endswith(_PNG_IEND):
                raise ImageError(path, "truncated PNG (no IEND chunk at the end)")
        elif head.startswith(_JPEG_SOI):
            fmt = "jpeg"
            width, height = _jpeg_size(path, f)
            f.seek(max(0, size - 1024))
            if b"\xff\xd9" not in f.read():
                raise ImageError(path, "truncated JPEG (no end-of-image marker)")
        elif _is_dicom(head) or path.suffix.lower() in (".dcm", ".dicom"):
            fmt = "dicom"
            width, height = _dicom_size(path)
        else:
            raise ImageError(path, "not a PNG, JPEG or DICOM image")
    if width <= 0 or height <= 0:
        raise ImageError(path, f"zero-sized image ({width} x {height})")
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"image of {width} x {height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (possible decompression bomb; raise max_pixels if it is genuine)",
        )
    return ImageInfo(fmt, width, height)


def _dicom_size(path) -> tuple[int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageError(path, f"not a readable DICOM file ({exc})") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageError(path, "DICOM file has no image (no Rows/Columns)")
    return int(ds.Columns), int(ds.Rows)


def _png_pixels(padded):
    """Width x height from a PNG's IHDR (big-endian uint32 at bytes 16 and 20), int64."""
    import tensorflow as tf

    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 16, 8), tf.uint8), tf.int64)
    weights = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
    return tf.reduce_sum(raw[:4] * weights) * tf.reduce_sum(raw[4:] * weights)


def _jpeg_pixels(contents):
    """Width x height of a JPEG from its frame header (not decoded), int64."""
    import tensorflow as tf

    shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
    return shape[0] * shape[1]


def decode_image_bytes(contents):
    """Decode PNG or JPEG bytes to float32 grey in [0, 1] with TensorFlow ops.

    Args:
        contents: scalar ``tf.string`` tensor, an encoded PNG (8 / 16 bit) or JPEG.

    Returns:
        ``tf.float32`` tensor of shape (H, W, 1). RGB(A) is converted with :data:`LUMA`
        weights (alpha ignored); 16-bit values are divided by 65535, 8-bit by 255.
    """
    import tensorflow as tf

    # 16-bit only for PNGs whose IHDR says so (byte 24): decoding 8-bit data as 8-bit is ~2x faster
    is_png = tf.strings.substr(contents, 0, 4) == b"\x89PNG"
    padded = tf.strings.join([contents, tf.constant(b"\0" * 25)])  # short inputs: no Substr error
    depth = tf.io.decode_raw(tf.strings.substr(padded, 24, 1), tf.uint8)
    is_jpeg = tf.strings.substr(padded, 0, 3) == b"\xff\xd8\xff"
    tf.debugging.Assert(is_png | is_jpeg, ["image_bytes is not a PNG or JPEG image"])
    is_16 = tf.logical_and(is_png, tf.reduce_any(tf.equal(depth, 16)))
    # refuse a film over MAX_PIXELS from its header, before decoding it (a client of the
    # serving graph bypasses read_image's own check): an error, never an out-of-memory crash
    pixels = tf.cond(
        is_png,
        lambda: _png_pixels(padded),
        lambda: tf.cond(is_jpeg, lambda: _jpeg_pixels(contents), lambda: tf.constant(0, tf.int64)),
    )  # neither: 0 here, the assertion above names the problem
    tf.debugging.Assert(
        pixels <= MAX_PIXELS,
        ["image_bytes: the image has", pixels, f"pixels, over the limit of {MAX_PIXELS:,}"],
    )

    def decode(dtype, scale):
        image = tf.io.decode_image(contents, channels=0, dtype=dtype, expand_animations=False)
        return tf.cast(image, tf.float32) * (1.0 / scale)

    image = tf.cond(is_16, lambda: decode(tf.uint16, 65535.0), lambda: decode(tf.uint8, 255.0))
    channels = tf.shape(image)[-1]
    # Weights per channel count 1..4: grey, grey+alpha, RGB, RGBA.
    table = tf.constant(
        [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [*LUMA, 0.0], [*LUMA, 0.0]], tf.float32
    )

    def to_grey():
        weights = table[channels - 1][:channels]
        return tf.clip_by_value(tf.tensordot(image, weights, axes=[[2], [0]]), 0.0, 1.0)

    grey = tf.cond(channels == 1, lambda: image[..., 0], to_grey)
    return grey[..., tf.newaxis]


def _read_dicom(path) -> LoadedImage:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise ImageError(path, f"not a readable DICOM file ({exc})") from exc
    try:
        arr = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageError(
            path,
            f"cannot decode DICOM pixel data with transfer syntax {name!r} ({exc}); "
            "JPEG / JPEG-LS / JPEG 2000 need a pylibjpeg plugin that supports it",
        ) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM (RGB / YBR converted by pydicom)
        arr = np.tensordot(arr[..., :3].astype(np.float64), np.asarray(LUMA), axes=([2], [0]))
    else:
        arr = apply_modality_lut(arr, ds)
        arr = apply_voi_lut(arr, ds)
    arr = np.asarray(arr, np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    # DICOM values have no absolute scale across vendors: after the modality and VOI LUTs
    # the image is min-max scaled to [0, 1].
    out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return LoadedImage(out.astype(np.float32), {"photometric": photometric, **_dicom_meta(ds)})


def _dicom_meta(ds) -> dict:
    meta = {}
    sex = str(getattr(ds, "PatientSex", "") or "").strip().upper()
    if sex in ("M", "F"):
        meta["sex"] = sex
    for key, name in (("birth_date", "PatientBirthDate"), ("study_date", "StudyDate")):
        value = str(getattr(ds, name, "") or "").strip()
        if value:
            meta[key] = value
    return meta


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Check and decode one image file (PNG, JPEG or DICOM) to float32 grey in [0, 1].

    Raises:
        ImageError: naming the file and the problem, for any file that cannot be used.
    """
    info = sniff(path, max_pixels)
    if info.format == "dicom":
        return _read_dicom(path)
    import tensorflow as tf

    contents = Path(path).read_bytes()
    try:
        pixels = decode_image_bytes(tf.constant(contents)).numpy()[..., 0]
    except tf.errors.OpError as exc:
        raise ImageError(path, f"cannot decode {info.format.upper()}: {exc.message}") from exc
    return LoadedImage(pixels, {})


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Pixels of :func:`read_image`: float32 array (H, W) in [0, 1]."""
    return read_image(path, max_pixels).pixels


def read_dicom_meta(path: str | os.PathLike) -> dict:
    """DICOM header fields (``sex``, ``birth_date``, ``study_date``) without decoding pixels."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise ImageError(path, f"not a readable DICOM file ({exc})") from exc
    return _dicom_meta(ds)


def write_png(path: str | os.PathLike, pixels: np.ndarray, bits: int = 8) -> None:
    """Write float [0, 1] grey ``pixels`` (H, W) as an 8- or 16-bit PNG (used by the generator)."""
    import cv2

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    scale = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    data = np.clip(np.rint(np.asarray(pixels, np.float64) * scale), 0, scale).astype(dtype)
    if not cv2.imwrite(str(path), data):
        raise OSError(f"{path}: could not write PNG")


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    bits: int = 16,
    photometric: str = "MONOCHROME2",
    sex: str | None = None,
    birth_date: str | None = None,
    study_date: str | None = None,
) -> None:
    """Write float [0, 1] grey ``pixels`` (H, W) as an uncompressed DICOM (Digital X-Ray,
    explicit VR little endian) with ``bits`` stored bits (12 or 16) in 16-bit words;
    ``MONOCHROME1`` stores the inverted values (bright = low), as some modalities do. ``sex``
    "M" / "F" and the dates (YYYYMMDD) go into PatientSex, PatientBirthDate and StudyDate.
    Used by the phantom generator; :func:`read_image` reads it back."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if bits not in (12, 16):
        raise ValueError(f"bits must be 12 or 16, got {bits!r}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    top = (1 << bits) - 1
    values = np.clip(np.rint(np.asarray(pixels, np.float64) * top), 0, top)
    if photometric == "MONOCHROME1":
        values = top - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    for key, value in (
        ("PatientSex", sex),
        ("PatientBirthDate", birth_date),
        ("StudyDate", study_date),
    ):
        if value is not None:
            setattr(ds, key, value)
    ds.PixelData = values.astype(np.uint16).tobytes()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


DICOM_SUFFIXES = (".dcm", ".dicom")


def encoded_bytes(path: str | os.PathLike) -> bytes:
    """The bytes the serving graph takes for one file: a PNG or JPEG as it is; a DICOM read
    by :func:`read_image` (modality / VOI LUT, MONOCHROME1 undone) and encoded as a 16-bit PNG.
    One implementation for the export's calibration, the TFLite evaluation and the demo."""
    path = Path(path)
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return path.read_bytes()
    return png16_bytes(read_image(path).pixels)


def png16_bytes(pixels: np.ndarray) -> bytes:
    """Grey ``pixels`` (H, W) float in [0, 1] as 16-bit PNG bytes: how every film that is not
    already a PNG / JPEG reaches the serving graph (``predict``, the DICOM path above, the
    robustness benchmark)."""
    import cv2

    data = np.clip(np.rint(np.asarray(pixels) * 65535.0), 0, 65535).astype(np.uint16)
    return cv2.imencode(".png", data)[1].tobytes()
