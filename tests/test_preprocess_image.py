"""The numpy image preprocessing (runtime/preprocess/image.py) against tf.image.resize and
keras.applications' preprocess_input, on real CIFAR-10 photos."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.kinds import make_preprocessor
from edgekit.runtime.preprocess.image import read_image_file


def _photos(cifar10_small, count=24):
    files = sorted((cifar10_small / "test").rglob("*.jpg"))[::40][:count]
    return [read_image_file(f) for f in files]


# Tolerance 1e-5: both sides resize in float32 with the same formula; the remaining difference is
# float32 rounding (~1e-5 of 255) divided by 127.5 (tf mode) or by 1 (caffe mode: ~3e-5 raw).
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "vgg16", "resnet50", "inception_v3"])
@pytest.mark.parametrize("size", [32, 64, 75, 20])  # same size, up x2, up non-integer, down
def test_numpy_preprocessing_matches_tensorflow(cifar10_small, backbone, size):
    from edgekit.train.image import preprocess_all, preprocessing_params

    photos = _photos(cifar10_small)
    expected = preprocess_all(photos, backbone, size)
    actual = make_preprocessor(preprocessing_params(backbone, size))(photos)
    assert actual.shape == expected.shape == (len(photos), size, size, 3)
    assert actual.dtype == np.float32
    scale = 127.5 if preprocessing_params(backbone, size)["mode"] == "tf" else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * (255 / scale) / 2 + 1e-5)


def test_numpy_resize_matches_tensorflow_on_non_square_images(cifar10_small):
    import tensorflow as tf

    from edgekit.runtime.preprocess.image import resize_bilinear

    photo = _photos(cifar10_small, 1)[0][:, :27]  # 32x27
    for height, width in ((45, 13), (7, 50)):
        expected = tf.image.resize(photo.astype(np.float32), (height, width)).numpy()
        np.testing.assert_allclose(resize_bilinear(photo, height, width), expected, atol=1e-4)


def test_image_file_paths_are_decoded(cifar10_small):
    from edgekit.train.image import preprocessing_params

    path = sorted((cifar10_small / "test").rglob("*.jpg"))[0]
    pre = make_preprocessor(preprocessing_params("mobilenet_v2", 32))
    np.testing.assert_array_equal(pre([str(path)]), pre([read_image_file(path)]))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 5), np.uint8), "expected HxWx3"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8, 3), 300.0, np.float32), "outside 0..255"),
    (np.zeros((8, 8, 3), np.complex64), "dtype"),
    ("/nonexistent/cat.jpg", "not found"),
])
def test_bad_images_raise_invalid_input(bad, message):
    from edgekit.train.image import preprocessing_params

    pre = make_preprocessor(preprocessing_params("mobilenet_v2", 32))
    with pytest.raises(InvalidInputError, match=message):
        pre([bad])


def test_corrupt_image_file_raises_invalid_input(tmp_path):
    from edgekit.train.image import preprocessing_params

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InvalidInputError, match="cannot decode"):
        make_preprocessor(preprocessing_params("vgg16", 32))([bad])


# -- reading files: the one reader of training and the device ------------------------------------

def _photo(cifar10_small, size=(48, 32)):
    from PIL import Image

    path = sorted((cifar10_small / "test").rglob("*.jpg"))[0]
    with Image.open(path) as img:
        return img.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def _save_sideways(img, path, **kwargs):
    """Store `img` as a phone does a portrait photo: pixels rotated, EXIF orientation 6 to undo it."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), **kwargs)


def test_exif_orientation_is_applied(cifar10_small, tmp_path):
    upright = _photo(cifar10_small)
    upright.save(tmp_path / "upright.png")
    _save_sideways(upright, tmp_path / "phone.png")
    expected = read_image_file(tmp_path / "upright.png")
    assert expected.shape == (32, 48, 3)
    np.testing.assert_array_equal(read_image_file(tmp_path / "phone.png"), expected)
    # The training loader uses the same reader.
    from edgekit.train.data import decode_image

    np.testing.assert_array_equal(decode_image(tmp_path / "phone.png"), expected)


def test_every_image_mode_decodes_to_rgb(cifar10_small, tmp_path):
    from PIL import Image

    photo = _photo(cifar10_small, (32, 32))
    rgb = np.asarray(photo)
    grey = np.asarray(photo.convert("L"))
    cases = {
        "rgb.bmp": (photo, rgb, 0),
        "rgb.webp": (photo, rgb, 0),  # saved lossless below
        "grey.png": (photo.convert("L"), np.repeat(grey[..., None], 3, -1), 0),
        "palette.gif": (photo.convert("P"), np.asarray(photo.convert("P").convert("RGB")), 0),
        "cmyk.jpg": (photo.convert("CMYK"), rgb, 6),  # JPEG rounding
        "grey16.png": (Image.fromarray(grey.astype(np.uint16) * 257), np.repeat(grey[..., None], 3, -1), 0),
    }
    for name, (img, expected, atol) in cases.items():
        img.save(tmp_path / name, **({"lossless": True} if name.endswith(".webp") else {}))
        got = read_image_file(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (32, 32, 3), name
        assert np.abs(got.astype(int) - expected.astype(int)).mean() <= atol, name


def test_alpha_is_composited_on_white_in_files_and_arrays(cifar10_small, tmp_path):
    from PIL import Image

    from edgekit.runtime.preprocess.image import BACKGROUND, check_image

    rgb = np.asarray(_photo(cifar10_small, (32, 32)))
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    from_file = read_image_file(tmp_path / "rgba.png")
    np.testing.assert_array_equal(from_file, check_image(rgba, 0))
    assert tuple(from_file[0, 0]) == BACKGROUND == (255, 255, 255)  # alpha 0: the background
    np.testing.assert_array_equal(from_file[:, -1], rgb[:, -1])       # alpha 255: the pixel
    # A palette image with a transparent colour, and float RGBA arrays, follow the same rule.
    Image.fromarray(rgba, "RGBA").convert("LA").save(tmp_path / "la.png")
    assert tuple(read_image_file(tmp_path / "la.png")[0, 0]) == BACKGROUND
    np.testing.assert_allclose(check_image(rgba.astype(np.float32), 0), check_image(rgba, 0), atol=0.5)


RSS_SCRIPT = """
import sys
import numpy as np
from PIL import Image
from edgekit.runtime.kinds import make_preprocessor
pre = make_preprocessor({"type": "image", "height": 64, "width": 64, "resize": "bilinear",
                         "mean": [127.5] * 3, "std": [127.5] * 3})
if sys.argv[1] == "baseline":
    pre([np.zeros((32, 32, 3), np.uint8)])
elif sys.argv[1] == "full-decode":  # what the reader did before: the whole photo, then the resize
    with Image.open(sys.argv[2]) as img:
        pre([np.asarray(img.convert("RGB"))])
else:
    pre([sys.argv[2]])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would include the forking parent's size.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) // 1024)
"""


def test_a_12_megapixel_jpeg_is_decoded_reduced(cifar10_small, tmp_path):
    """Peak RSS of preprocessing one 4032x3024 JPEG, each in a child process, above a child that
    preprocesses a 32x32 array. Measured: about 160-225 MB with a full decode, under 15 MB with the
    reader's reduced decode."""
    import subprocess
    import sys

    path = tmp_path / "phone.jpg"
    _photo(cifar10_small, (4032, 3024)).save(path, quality=90)
    assert read_image_file(path).shape == (756, 1008, 3)  # JPEG DCT scaling by 1/4
    peak = {}
    for mode in ("baseline", "full-decode", "reader"):
        proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, mode, str(path)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        peak[mode] = int(proc.stdout.split()[-1])
    added = {mode: peak[mode] - peak["baseline"] for mode in ("full-decode", "reader")}
    print(f"peak RSS added by one 12 MP JPEG (MB): {added}")
    assert added["reader"] < 50 < added["full-decode"]


def test_a_phone_rotated_photo_and_its_upright_twin_get_the_same_prediction(cifar10_small, exported_dir,
                                                                            tmp_path):
    """What the code guarantees first: the runtime's decoded model inputs of an EXIF-rotated phone
    photo equal those of its upright twin up to JPEG re-encoding noise (and would not without the
    EXIF step). Then labels from the real trained image model, run by the runtime CLI alone
    (TensorFlow never imported there), on the photos where that model is decisive: a 46%-accurate model
    flips near-ties on re-encoding noise alone, which says nothing about orientation."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from edgekit import runtime

    bundle = exported_dir("image") / "image-tflite-fp32"
    files = sorted((cifar10_small / "test").rglob("*.jpg"))[::47][:20]
    inputs = []
    for i, f in enumerate(files):
        with Image.open(f) as img:
            photo = img.convert("RGB").resize((1280, 960), Image.Resampling.BICUBIC)  # decoded at 1/2
        photo.save(tmp_path / f"{i}-upright.jpg", quality=95)
        _save_sideways(photo, tmp_path / f"{i}-phone.jpg", quality=95)
        inputs += [str(tmp_path / f"{i}-upright.jpg"), str(tmp_path / f"{i}-phone.jpg")]
        if i == 0:  # the phone photo's pixels with its orientation tag dropped: what a reader without EXIF sees
            with Image.open(tmp_path / "0-phone.jpg") as img:
                img.convert("RGB").save(tmp_path / "0-no-exif.png")

    with runtime.load(bundle) as model:
        preprocess = make_preprocessor(model.bundle.preprocessing, bundle)
    arrays = preprocess(inputs).astype(np.float64)
    span = float(arrays.max() - arrays.min())
    noise = np.abs(arrays[::2] - arrays[1::2]).mean(axis=(1, 2, 3)) / span
    unrotated = np.abs(preprocess([str(tmp_path / "0-no-exif.png")])[0] - arrays[0]).mean() / span
    print(f"decoded inputs, upright vs EXIF-rotated: mean |diff| {noise.max() * 255:.2f} of 255 at most; "
          f"without the EXIF step {unrotated * 255:.1f} of 255")
    # Measured: 0.19 of 255 (re-encoding noise); ignoring the tag, tens of levels.
    assert noise.max() < 1.5 / 255 and unrotated > 10 / 255

    code = ("import sys; from edgekit.runtime.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "predict", str(bundle), *inputs, "--json", "--top-k", "10"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["predictions"]
    decisive = 0
    for upright, phone in zip(rows[::2], rows[1::2]):
        top = sorted(upright["probabilities"].values(), reverse=True)
        for label, p in upright["probabilities"].items():
            assert abs(phone["probabilities"][label] - p) < 0.05  # re-encoding noise moves little
        # A top-1 margin of 0.1 is twice the 0.05 that re-encoding may move a probability.
        if top[0] - top[1] >= 0.1:
            decisive += 1
            assert phone["label"] == upright["label"], (upright["input"], upright["label"], phone["label"])
    assert decisive >= 3  # about half of these 20 photos on the quick model
