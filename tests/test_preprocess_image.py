"""The numpy image preprocessing (runtime/preprocess/image.py) against tf.image.resize and
keras.applications' preprocess_input, on real CIFAR-10 photos."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.preprocess import make_preprocessor
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
    (np.zeros((8, 8, 4), np.uint8), "expected HxWx3"),
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
