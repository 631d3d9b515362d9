"""JPEG decoders (issue 25): where held-out photos are found, the second decoder verify's sensitivity
figure uses (verify/decoders.py), and how the figure and the phone check's two figures are reported.
Fast: no training, no MediaPipe (the slow checks on the trained model are in test_phone.py and
test_verify_real.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.core import UserError
from edgekit.devices.phone import heldout_folder, list_photos
from edgekit.runtime.preprocess.image import read_image_file
from edgekit.verify import decoders, report


def _photos(folder, classes=("cat", "dog"), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name / f"{i}.jpg")
    return folder


def test_heldout_photos_are_found_inside_or_beside_the_training_folder(tmp_path):
    inside = tmp_path / "a"
    _photos(inside / "train"), _photos(inside / "test")
    assert heldout_folder(str(inside)) == inside / "test"                     # trained on a/ (train/ + test/)
    beside = tmp_path / "photos"
    _photos(beside / "train"), _photos(beside / "test")
    assert heldout_folder(str(beside / "train")) == beside / "test"           # trained on photos/train
    assert heldout_folder(None, beside) == beside / "test"                    # --data with a test/ split
    assert heldout_folder(None, beside / "train") == beside / "train"         # --data: the folder itself


@pytest.mark.parametrize("source, data, message", [
    ("{tmp}/photos/train", None, "neither"),           # photos/train without photos/test: one line, both places
    ("embedded", None, "not trained on an image folder"),
    (None, "{tmp}/missing", "photo folder not found"),
])
def test_missing_photos_are_one_clear_line(tmp_path, source, data, message):
    (tmp_path / "photos" / "train").mkdir(parents=True)
    fill = lambda v: v and v.format(tmp=tmp_path)  # noqa: E731
    with pytest.raises(UserError) as caught:
        heldout_folder(fill(source), fill(data))
    text = str(caught.value)
    assert "\n" not in text and message in text and "--data" in text
    if message == "neither":
        assert f"neither {tmp_path}/photos/train/test nor {tmp_path}/photos/test exists" in text


def test_any_photos_are_taken_unlabelled(tmp_path):
    _photos(tmp_path / "shots", classes=("2024", "2025"), n=4)       # folders, but not named after labels
    paths, ys = list_photos(tmp_path / "shots", ["cat", "dog"], per_class=2)
    assert len(paths) == 4 and set(ys) == {-1}
    paths, ys = list_photos(_photos(tmp_path / "classes"), ["cat", "dog"], per_class=2)
    assert ys == [0, 0, 1, 1]


def test_devices_check_data_errors_are_one_line(tmp_path, capsys):
    import hashlib

    from edgekit.cli import main

    bundle = tmp_path / "m-tflite-fp32"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"x")
    (bundle / "manifest.json").write_text(json.dumps({
        "format": "tflite", "variant": "fp32", "model_file": "model.tflite", "name": "m",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "inputs": [{"name": "x", "shape": [1, 8, 8, 3], "dtype": "float32", "quantization": None}],
        "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32", "quantization": None}]}))
    assert main(["devices", "check", "android-arm64", str(bundle), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "photo folder not found" in err[0], err
    assert main(["devices", "check", "rpi4", str(bundle), "--data", str(tmp_path)]) == 2
    assert "--data is for phone checks" in capsys.readouterr().err


def test_libjpeg_turbo_defaults_decode_exactly_like_the_runtime(cifar10_small):
    """Android 7+ (Skia's SkJpegCodec) keeps libjpeg-turbo's default IDCT (ISLOW) and fancy upsampling;
    so does Pillow: the same library with the same settings gives the same pixels. The IFAST IDCT the
    sensitivity figure uses moves pixels by a few levels (measured: max 5, mean 1.0 on these photos)."""
    import simplejpeg

    files = sorted((cifar10_small / "test").rglob("*.jpg"))[::50]
    diffs = []
    for f in files:
        runtime_pixels = read_image_file(f)
        np.testing.assert_array_equal(simplejpeg.decode_jpeg(f.read_bytes(), colorspace="RGB"), runtime_pixels)
        other = decoders.decode_other(f)
        assert other.shape == runtime_pixels.shape
        diffs.append(np.abs(other.astype(int) - runtime_pixels.astype(int)).max())
    assert 1 <= max(diffs) <= 8, diffs


def test_second_decoder_keeps_the_runtime_geometry(tmp_path):
    """Large photos are decoded reduced (DCT scaling) and EXIF orientation applied, as the runtime
    reader does: same shape, pixels a few levels apart, never a rotated or rescaled image."""
    from PIL import Image

    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)).resize(
        (2400, 1800), Image.Resampling.BICUBIC))
    big = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(big, quality=90)
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(smooth[:600, :800]).save(sideways, quality=90, exif=exif.tobytes())
    for path in (big, sideways):
        runtime_pixels, other = read_image_file(path), decoders.decode_other(path)
        assert other.shape == runtime_pixels.shape, path
        assert np.abs(other.astype(int) - runtime_pixels.astype(int)).max() <= 8, path
    assert read_image_file(big).shape == (900, 1200, 3) and read_image_file(sideways).shape == (800, 600, 3)


def test_decoder_figure_in_the_summary_markdown_and_html():
    result = {"task": "image", "passed": False, "samples": 10, "data_source": "x", "warnings": [],
              "reference": {"source": "keras", "accuracy": 0.5, "confidence_margin": 0.2, "confident": True},
              "artifacts": [
                  {"bundle": "m-tflite-fp32", "passed": True, "decoder_sensitivity": decoders.flips(
                      np.eye(4)[[0, 1, 2, 3]], np.eye(4)[[0, 1, 2, 3]], np.array([0, 1, 2, 3]))},
                  {"bundle": "m-tflite-int8", "passed": False, "reasons": ["r"], "decoder_sensitivity":
                      decoders.flips(np.eye(4)[[0, 1, 2, 3]], np.eye(4)[[0, 1, 3, 3]], np.array([0, 1, 2, 3]))}],
              "decoder_sensitivity": {"runtime_decoder": "Pillow", "other_decoder": "simplejpeg IFAST",
                                      "photo_source": "photos/test", "photos": 4, "labelled": True,
                                      "pixel_difference": {"max_levels": 5, "mean_levels": 1.0,
                                                           "share_differing": 0.65}, "reference": None}}
    int8 = result["artifacts"][1]["decoder_sensitivity"]
    assert int8["changed"] == 1 and int8["agreement"] == 0.75 and int8["accuracy_other_decoder"] == 0.75
    line = next(l for l in report.summary_lines(result) if l.startswith("decoder sensitivity"))
    assert "m-tflite-int8 25.0% (1/4)" in line and "m-tflite-fp32 0.0% (0/4)" in line
    assert "| m-tflite-int8 | 25.0% (1/4) | 100.0% | 75.0% |" in report.markdown_report([result])
    page = report.html_report([result])
    assert "JPEG decoder sensitivity (not a gate)" in page
    assert 'alt="decoder sensitivity per bundle" src="data:image/png;base64,' in page
    result["decoder_sensitivity"] = {"skipped": "no photo files"}
    assert "JPEG decoder sensitivity: skipped (no photo files)." in report.markdown_report([result])


def test_phone_check_lines_name_both_figures():
    from edgekit.devices.phone import check_lines

    summary = {"device": "android-arm64", "results": [
        {"bundle": "m-tflite-int8", "status": "fail", "passed": False, "failure": "int8 kernels", "overall": {},
         "agreement_same_pixels": 0.912, "agreement_file_decoded": 0.914, "decoder_sensitive": True}]}
    (line,) = check_lines(summary)
    assert "FAIL (int8 kernels)" in line and "same pixels 91.2%" in line and "files 91.4%" in line
