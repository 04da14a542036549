import cv2
import numpy as np
import pydicom
import pytest
import tensorflow as tf
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from tf_boneage.data import io


def _png(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_png_8bit_grey_exact(tmp_path):
    a = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_allclose(io.load_image(_png(tmp_path / "a.png", a)), a / 255.0, atol=1e-6)


def test_png_16bit_grey_exact(tmp_path):
    a = np.array([[0, 1000, 65535], [257, 30000, 12]], np.uint16)
    out = io.load_image(_png(tmp_path / "a.png", a))
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(out, a / 65535.0, atol=1e-6)


@pytest.mark.parametrize("alpha", [False, True])
def test_png_rgb_and_rgba_use_luma(tmp_path, alpha):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 100, 100]]], np.uint8)
    expected = np.array([[0.2989, 0.5870, 0.1140, 100 / 255]])
    bgr = rgb[..., ::-1]
    if alpha:
        bgr = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 7, np.uint8)], -1)
    np.testing.assert_allclose(io.load_image(_png(tmp_path / "c.png", bgr)), expected, atol=1e-3)


def test_jpeg_grey_close(tmp_path):
    a = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    path = tmp_path / "a.jpg"
    assert cv2.imwrite(str(path), a, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert io.sniff(path) == io.ImageInfo("jpeg", 32, 16)
    np.testing.assert_allclose(io.load_image(path), a / 255.0, atol=0.02)


def test_tf_decoder_is_the_python_loader(tmp_path):
    a = (np.random.default_rng(0).random((9, 7)) * 65535).astype(np.uint16)
    path = _png(tmp_path / "a.png", a)
    graph = tf.function(io.decode_image_bytes)(tf.io.read_file(str(path)))
    assert graph.shape == (9, 7, 1)
    np.testing.assert_allclose(graph.numpy()[..., 0], io.load_image(path), atol=1e-6)
    np.testing.assert_allclose(io.load_image(path), a / 65535.0, atol=1e-6)


def _dicom(
    path, pixels, photometric="MONOCHROME2", sex="M", syntax=ExplicitVRLittleEndian, **extra
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    if sex is not None:
        ds.PatientSex = sex
    ds.PatientBirthDate, ds.StudyDate = "20100101", "20200615"
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds["PixelData"].VR = "OB"
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 16])
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome1_is_inverted_with_rescale_and_meta(tmp_path):
    stored = np.array([[0, 100], [200, 400]], np.uint16)
    path = _dicom(
        tmp_path / "a.dcm", stored, "MONOCHROME1", "F", RescaleSlope=2, RescaleIntercept=-100
    )
    loaded = io.read_image(path)
    # modality LUT 2x-100 keeps the order; min-max then invert: high stored value -> dark
    expected = 1.0 - (stored * 2.0 - 100 - (-100)) / (800 - 0)
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-6)
    assert loaded.meta == {
        "photometric": "MONOCHROME1",
        "sex": "F",
        "birth_date": "20100101",
        "study_date": "20200615",
    }


def test_dicom_window_is_applied(tmp_path):
    stored = np.array([[0, 900, 1100, 1300, 5000]], np.uint16)
    path = _dicom(tmp_path / "w.dcm", stored, WindowCenter=1100, WindowWidth=201)
    out = io.load_image(path)[0]
    assert out[0] == out[1] == 0.0 and out[3] == out[4] == 1.0
    assert 0.4 < out[2] < 0.6


def test_dicom_without_sex_has_no_sex(tmp_path):
    path = _dicom(tmp_path / "n.dcm", np.ones((4, 4)), sex=None)
    assert "sex" not in io.read_image(path).meta
    assert io.read_dicom_meta(path) == {"birth_date": "20100101", "study_date": "20200615"}


def test_undecodable_compressed_dicom_names_the_syntax(tmp_path):
    path = _dicom(tmp_path / "j.dcm", np.ones((4, 4)), syntax=JPEG2000Lossless)
    with pytest.raises(io.ImageError, match=r"j\.dcm.*transfer syntax.*JPEG 2000"):
        io.load_image(path)


def _valid_png_bytes(h=4, w=5):
    ok, buf = cv2.imencode(".png", np.zeros((h, w), np.uint8))
    return buf.tobytes()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty"),
        ("trunc.png", _valid_png_bytes()[:-20], "truncated PNG"),
        ("header.png", _valid_png_bytes()[:20], "truncated PNG header"),
        ("notes.png", b"hello, I am text and not an image at all", "not a PNG, JPEG or DICOM"),
        (
            "zero.png",
            _valid_png_bytes()[:16] + b"\x00\x00\x00\x00" + _valid_png_bytes()[20:],
            "zero-sized",
        ),
        (
            "trunc.jpg",
            cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes()[:-40],
            "truncated JPEG",
        ),
    ],
)
def test_bad_files_are_refused_with_the_file_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(io.ImageError, match=message) as info:
        io.load_image(path)
    assert info.value.path == str(path) and name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(io.ImageError, match="file not found"):
        io.load_image(tmp_path / "nope.png")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_valid_png_bytes(100, 100))
    with pytest.raises(io.ImageError, match="exceeds the limit"):
        io.load_image(path, max_pixels=5_000)
    assert io.load_image(path, max_pixels=10_000).shape == (100, 100)


def test_write_png_round_trip(tmp_path):
    a = np.random.default_rng(1).random((6, 5)).astype(np.float32)
    io.write_png(tmp_path / "x.png", a, bits=16)
    np.testing.assert_allclose(io.load_image(tmp_path / "x.png"), a, atol=1 / 65535)
    with pytest.raises(ValueError, match="12"):
        io.write_png(tmp_path / "y.png", a, bits=12)


def test_compressed_dicom_decodes_through_pylibjpeg(tmp_path):
    from pydicom.uid import JPEGBaseline8Bit

    pixels = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (8, 1))
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
    path = _dicom(
        tmp_path / "c.dcm",
        pixels,
        syntax=JPEGBaseline8Bit,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
    )
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([jpeg.tobytes()])
    ds.save_as(path, enforce_file_format=True)
    out = io.load_image(path)
    assert out.shape == (8, 16)
    np.testing.assert_allclose(out, pixels / 255.0, atol=0.03)


def test_a_film_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    """50 megapixels (io.MAX_PIXELS) is the limit: a 7,100 x 7,100 film (50.4 MP) is refused
    by the reader (predict, the cache, manifests) naming the file, and by the serving graph's
    decoder from the PNG / JPEG header, before any pixel is decoded: an error, not an
    out-of-memory crash. A 7,000 x 7,000 film (49 MP) is decoded."""
    big = np.zeros((7100, 7100), np.uint8)
    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), big)
    with pytest.raises(io.ImageError, match="exceeds the limit") as err:
        io.read_image(path)
    assert "huge.png" in str(err.value) and "50,410,000" in str(err.value)
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, big)[1].tobytes()
        with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit of 50,000,000"):
            io.decode_image_bytes(tf.constant(data))
    ok = io.decode_image_bytes(tf.constant(cv2.imencode(".png", big[:7000, :7000])[1].tobytes()))
    assert ok.shape == (7000, 7000, 1)
