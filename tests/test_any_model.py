"""A user's own Keras model in, with the CLI alone: `edgekit export MODEL.keras --calibration
samples.npz` -> `verify MODEL ARTIFACTS --data FILE.npz` -> `predict BUNDLE INPUT.npz` -> `devices
check rpi4 BUNDLE` (emulated), for a functional model with two inputs and two outputs (a tensor
bundle); and an image classifier exported with `--task image --preprocess scale:1/255 --labels`
that `predict` runs on a JPEG. The fast tests check the one-line refusals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main


def _two_in_two_out(workdir: Path, train: bool) -> tuple[Path, dict]:
    """features (8) + extra (4) -> cls (3-class softmax) and value (regression), trained briefly on
    a learnable rule; saved as workdir/two.keras. Returns the path and the input arrays."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((600, 8)).astype(np.float32)
    extra = rng.standard_normal((600, 4)).astype(np.float32)
    cls = (features[:, 0] + extra[:, 0] > 0).astype(int) + (features[:, 1] > 0.8).astype(int)
    value = (0.5 * features[:, 2] + extra[:, 1])[:, None].astype(np.float32)
    a, b = keras.Input((8,), name="features"), keras.Input((4,), name="extra")
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(hidden),
                                 "value": keras.layers.Dense(1, name="value")(hidden)})
    if train:
        model.compile("adam", {"cls": "sparse_categorical_crossentropy", "value": "mse"})
        model.fit({"features": features, "extra": extra}, {"cls": cls, "value": value}, epochs=30,
                  batch_size=32, verbose=0)
    path = workdir / "two.keras"
    model.save(path)
    return path, {"features": features, "extra": extra, "cls": cls}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --- fast: refusals in one line, before any conversion --------------------------------------------------

def test_outside_model_refusals_are_one_line(tmp_path, capsys):
    model, arrays = _two_in_two_out(tmp_path, train=False)
    np.savez(tmp_path / "only_x.npz", x=arrays["features"][:10])
    np.savez(tmp_path / "wrong.npz", features=arrays["features"][:10], other=arrays["extra"][:10])
    cases = [
        (["export", str(tmp_path / "missing.keras")], "model file not found"),
        (["export", str(model), "--calibration", str(tmp_path / "only_x.npz")], "takes 2 inputs"),
        (["export", str(model), "--calibration", str(tmp_path / "wrong.npz")], "lacks input(s) extra"),
        (["export", str(model), "--task", "image"], "needs a one-input model; this one has 2 inputs"),
        (["export", str(model), "--preprocess", "scale:1/255"], "needs --task image"),
    ]
    legacy = tmp_path / "old.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    cases.append((["export", str(legacy)], "--allow-unsafe"))
    for argv, expected in cases:
        rc, _, err = _run(argv + ["--out", str(tmp_path / "art")], capsys)
        assert rc == 2 and expected in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not list((tmp_path / "art").glob("two-*")) if (tmp_path / "art").exists() else True


def test_a_model_that_cannot_load_names_the_layer(tmp_path):
    import keras

    from edgekit.core import UserError
    from edgekit.train.io import load_model

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2, name="doubling")(inputs)).save(tmp_path / "lam.keras")
    with pytest.raises(UserError, match=r"lam.keras: layer 'doubling' is a Lambda layer") as info:
        load_model(tmp_path / "lam.keras")
    assert "\n" not in str(info.value)


def test_calibrated_variants_are_skipped_without_calibration(tmp_path, capsys):
    model, _ = _two_in_two_out(tmp_path, train=False)
    rc, _, err = _run(["export", str(model), "--out", str(tmp_path / "art"), "--variants", "int8,int16x8"], capsys)
    assert rc == 0  # nothing to convert: every requested variant is skipped, with the reason
    assert err.count("skipped: needs representative inputs to calibrate: pass --calibration") == 3


# --- slow: the whole path ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_inputs_two_outputs_through_the_cli(tmp_path, capsys):
    model, arrays = _two_in_two_out(tmp_path, train=True)
    np.savez(tmp_path / "samples.npz", features=arrays["features"][:300], extra=arrays["extra"][:300])
    np.savez(tmp_path / "data.npz", features=arrays["features"][300:500], extra=arrays["extra"][300:500])
    art = tmp_path / "art"
    rc, _, err = _run(["export", str(model), "--calibration", str(tmp_path / "samples.npz"), "--out", str(art),
                       "--formats", "tflite,onnx", "--variants", "fp32,int8"], capsys)
    assert rc == 0, err
    names = {"two-tflite-fp32", "two-tflite-int8", "two-onnx-fp32", "two-onnx-int8"}
    assert {p.name for p in art.iterdir() if not p.name.startswith(".")} == names
    for name in names:
        manifest = json.loads((art / name / "manifest.json").read_text())
        assert manifest["task"] == "tensor" and manifest["name"] == "two"
        assert {i["name"] for i in manifest["inputs"]} == {"features", "extra"}
        assert {o["name"] for o in manifest["outputs"]} == {"cls", "value"}
        if name.endswith("fp32"):
            assert manifest["export"]["max_abs_err_vs_keras"] < 1e-5, name
        if "tflite" in name:
            assert all(not record.startswith("Flex") for record in manifest["ops"]), manifest["ops"]

    report = tmp_path / "verify.json"
    rc, _, err = _run(["verify", str(model), str(art), "--data", str(tmp_path / "data.npz"),
                       "--json", str(report)], capsys)
    result = json.loads(report.read_text())
    assert result["task"] == "tensor" and result["samples"] == 200 and result["model_dir"] == str(model)
    by_bundle = {e["bundle"]: e for e in result["artifacts"]}
    for name in ("two-tflite-fp32", "two-onnx-fp32", "two-tflite-int8"):
        assert by_bundle[name]["passed"], (name, by_bundle[name].get("reasons"))
    assert by_bundle["two-tflite-fp32"]["max_abs_error"] < 1e-5

    # predict on an .npz of two samples: outputs by name, equal to Keras for fp32
    import keras

    keras_model = keras.saving.load_model(model)
    sample = {"features": arrays["features"][500:502], "extra": arrays["extra"][500:502]}
    np.savez(tmp_path / "two_samples.npz", **sample)
    expected = keras_model.predict(sample, verbose=0)
    for bundle in ("two-tflite-fp32", "two-onnx-fp32"):
        rc, out, err = _run(["predict", str(art / bundle), str(tmp_path / "two_samples.npz"), "--json"], capsys)
        assert rc == 0, err
        rows = json.loads(out)["predictions"]
        assert [r["input"] for r in rows] == [f"{tmp_path / 'two_samples.npz'}[{i}]" for i in range(2)]
        for name in ("cls", "value"):
            got = np.array([r["outputs"][name] for r in rows])
            np.testing.assert_allclose(got, expected[name], atol=1e-5, err_msg=f"{bundle} {name}")

    from test_devices_emulated import _need_emulation_tools

    _need_emulation_tools()
    check = tmp_path / "check.json"
    rc, out, err = _run(["devices", "check", "rpi4", str(art / "two-tflite-int8"), "--json", str(check)], capsys)
    assert rc == 0, out + err
    (entry,) = json.loads(check.read_text())["results"]
    assert entry["status"] == "pass" and entry["samples"] == 8


@pytest.mark.slow
def test_outside_image_model_predicts_a_jpeg(tmp_path, capsys, cifar10_small):
    """A user's CNN trained on pixels / 255 (no Rescaling layer in it): with --task image --preprocess
    scale:1/255 --labels, `predict` takes a JPEG and answers what Keras answers on the same pixels."""
    import keras
    from PIL import Image

    classes = ["airplane", "automobile", "frog"]
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((cifar10_small / "train" / name).glob("*.jpg"))[:200]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(index)
    x = np.stack(images).astype(np.float32) / 255.0
    y = np.array(labels)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3), name="pixels"),
                              keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
                              keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    model.save(tmp_path / "cnn.keras")
    (tmp_path / "labels.txt").write_text("\n".join(classes) + "\n")
    np.savez(tmp_path / "cal.npz", x=x[::3])
    art = tmp_path / "art"
    rc, _, err = _run(["export", str(tmp_path / "cnn.keras"), "--name", "photos", "--task", "image",
                       "--preprocess", "scale:1/255", "--labels", str(tmp_path / "labels.txt"),
                       "--calibration", str(tmp_path / "cal.npz"), "--out", str(art), "--formats", "tflite",
                       "--variants", "fp32,int8"], capsys)
    assert rc == 0, err
    manifest = json.loads((art / "photos-tflite-fp32" / "manifest.json").read_text())
    assert manifest["task"] == "image" and manifest["labels"] == classes
    assert manifest["preprocessing"]["std"] == [255.0] * 3 and manifest["preprocessing"]["height"] == 32

    photos = [sorted((cifar10_small / "test" / name).glob("*.jpg"))[0] for name in classes]
    for photo in photos:
        shutil.copy(photo, tmp_path / f"{photo.parent.name}.jpg")
    jpegs = [str(tmp_path / f"{name}.jpg") for name in classes]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in jpegs]).astype(np.float32) / 255.0
    keras_probs = model.predict(pixels, verbose=0)
    rc, out, err = _run(["predict", str(art / "photos-tflite-fp32"), *jpegs, "--json"], capsys)
    assert rc == 0, err
    rows = json.loads(out)["predictions"]
    assert [r["label"] for r in rows] == [classes[i] for i in keras_probs.argmax(1)]
    for row, probs in zip(rows, keras_probs):
        np.testing.assert_allclose([row["probabilities"][c] for c in classes], probs, atol=1e-5)
    rc, out, err = _run(["predict", str(art / "photos-tflite-int8"), *jpegs], capsys)
    lines = out.strip().splitlines()
    assert rc == 0 and len(lines) == 3, err
    assert all(line.split(": ", 1)[1].split(" (")[0] in classes for line in lines), out


def test_golden_file_of_a_two_input_model_round_trips(tmp_path):
    """Several inputs travel in golden files as x.NAME (runtime/golden.py), read back by name."""
    from edgekit.runtime.golden import Golden, read

    x = {"features": np.zeros((4, 8), np.float32), "extra": np.ones((4, 4), np.float32)}
    np.savez(tmp_path / "g.npz", **Golden(x, np.zeros((4, 5), np.float32), None, None, {"task": "tensor"}).arrays())
    golden = read(tmp_path / "g.npz")
    assert set(golden.x) == {"features", "extra"} and golden.x["extra"].shape == (4, 4)
    assert golden.head(2).x["features"].shape == (2, 8) and golden.head(2).reference.shape == (2, 5)
