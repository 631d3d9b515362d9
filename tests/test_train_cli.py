"""`edgekit train` end to end on small data: the model directory is complete, failures leave
nothing behind, and the same seed gives the same model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit import cli

WORDS = {"spam": ["free", "prize", "win", "cash", "claim", "urgent", "offer", "txt"],
         "ham": ["see", "you", "later", "lunch", "home", "ok", "thanks", "tonight"]}


@pytest.fixture()
def small_tsv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["label\ttext"]
    for i in range(160):
        label = "spam" if i % 2 else "ham"
        lines.append(f"{label}\t{' '.join(rng.choice(WORDS[label], 6)).capitalize()}!")
    path = tmp_path / "small.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow  # trains
def test_train_text_cli_writes_a_complete_model_dir(small_tsv, tmp_path, capsys):
    out = tmp_path / "models" / "text"
    code = cli.main(["train", "text", "--data", str(small_tsv), "--out", str(out), "--epochs", "4"])
    assert code == 0
    for name in ("model.keras", "edgekit.json", "assets/vocab.txt", "heldout.npz", "calibration.npz"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "edgekit.json").read_text())
    for key in ("task", "name", "labels", "input", "output", "preprocessing", "architecture", "data",
                "metrics", "seed", "epochs", "versions", "created"):
        assert key in meta, key
    assert meta["labels"] == ["ham", "spam"] and meta["epochs"] == 4 and not meta["data"]["synthetic"]
    assert meta["preprocessing"]["padding"] == "pre"
    assert meta["metrics"]["train_seconds"] > 0
    vocab = (out / "assets" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[:2] == ["", "[UNK]"] and "prize" in vocab

    from edgekit.train.io import load_model

    model, _ = load_model(out)
    heldout = np.load(out / "heldout.npz")
    assert heldout["x"].dtype == np.int32 and heldout["x"].shape[1] == meta["input"]["shape"][1]
    assert len(heldout["y"]) == meta["data"]["test"]  # small test split: all of it is held out
    probs = model.predict(heldout["x"], verbose=0)
    assert np.mean(probs.argmax(1) == heldout["y"]) == pytest.approx(meta["metrics"]["test_accuracy"])
    assert meta["metrics"]["test_accuracy"] >= 0.9  # the two word sets are trivially separable
    assert np.load(out / "calibration.npz")["x"].shape[0] == meta["data"]["train"]

    # The runtime tokenizer turns raw text into the ids the model was trained on.
    from edgekit.runtime.kinds import make_preprocessor

    pre = make_preprocessor(meta["preprocessing"], out)
    assert model.predict(pre(["Free cash prize, claim now!"]), verbose=0).argmax() == 1
    assert f"wrote {out}" in capsys.readouterr().err


@pytest.mark.slow  # trains
def test_failed_run_leaves_no_directory(small_tsv, tmp_path, monkeypatch):
    def broken_fit(dataset, workdir, **kwargs):
        (workdir / "model.keras").write_bytes(b"half written")
        raise RuntimeError("simulated crash during training")

    from edgekit.train import text

    monkeypatch.setattr(text, "fit", broken_fit)
    out = tmp_path / "models" / "text"
    assert cli.main(["train", "text", "--data", str(small_tsv), "--out", str(out)]) == 3
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary .partial folder either


def test_bad_data_is_a_user_error_and_leaves_no_directory(small_tsv, tmp_path, capsys):
    out = tmp_path / "models" / "text"
    code = cli.main(["train", "text", "--data", str(small_tsv), "--out", str(out),
                     "--text-column", "message"])
    assert code == 2
    assert "no column named 'message'; columns are: label, text" in capsys.readouterr().err
    assert not out.exists()


def test_option_for_another_task_is_refused(small_tsv, tmp_path, capsys):
    code = cli.main(["train", "text", "--data", str(small_tsv), "--out", str(tmp_path / "m"),
                     "--features", "mfcc"])
    assert code == 2 and "--features does not apply to the text task" in capsys.readouterr().err


def _weights(path):
    from edgekit.train.io import load_model

    return [w.copy() for w in load_model(path)[0].get_weights()]


@pytest.mark.slow  # trains
def test_same_seed_gives_the_same_model(small_tsv, tmp_path):
    from edgekit.train import train_model

    a = train_model("text", out=tmp_path / "a", data=small_tsv, seed=3, epochs=1)
    b = train_model("text", out=tmp_path / "b", data=small_tsv, seed=3, epochs=1)
    c = train_model("text", out=tmp_path / "c", data=small_tsv, seed=4, epochs=1)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(_weights(a), _weights(c)))
    np.testing.assert_array_equal(np.load(a / "heldout.npz")["x"], np.load(b / "heldout.npz")["x"])


@pytest.mark.slow  # trains
def test_embedded_text_data_is_synthetic_and_learnable(tmp_path, capsys):
    from edgekit.train import train_model

    out = train_model("text", out=tmp_path / "t", quick=True)
    meta = json.loads((out / "edgekit.json").read_text())
    assert meta["data"]["synthetic"] is True and meta["data"]["source"] == "embedded"
    assert meta["metrics"]["test_accuracy"] >= 0.9
    assert "SYNTHETIC" in capsys.readouterr().err


@pytest.mark.slow  # trains
def test_embedded_speech_data_is_synthetic_and_learnable(tmp_path):
    from edgekit.train import train_model

    out = train_model("speech", out=tmp_path / "s", quick=True)
    meta = json.loads((out / "edgekit.json").read_text())
    assert meta["data"]["synthetic"] is True and meta["labels"][0] == "_silence"
    assert meta["metrics"]["utterance_accuracy"] >= 0.8
    heldout = np.load(out / "heldout.npz")
    assert heldout["x"].shape[1:] == (meta["preprocessing"]["num_frames"], 40)
    assert heldout["y"].shape == heldout["x"].shape[:2] and heldout["utterance_y"].min() >= 1


@pytest.mark.slow
@pytest.mark.cost(170)
def test_embedded_image_data_is_synthetic_and_learnable(tmp_path):
    from edgekit.train import train_model

    out = train_model("image", out=tmp_path / "i", quick=True, weights="none")
    meta = json.loads((out / "edgekit.json").read_text())
    assert meta["data"]["synthetic"] is True and meta["architecture"]["bn_momentum"] == 0.9
    # 4 shapes (chance 0.25). --quick must give a decisive model: the quick pipeline's int8 gates rely
    # on it (0.72 after 3 epochs at 64 px failed them; 16 epochs at 48 px: 0.99)
    assert meta["metrics"]["test_accuracy"] >= 0.9


def test_image_input_size_below_backbone_minimum_is_refused(tmp_path, capsys):
    code = cli.main(["train", "image", "--backbone", "inception_v3", "--input-size", "64",
                     "--out", str(tmp_path / "m")])
    assert code == 2
    assert "--input-size 64 is below inception_v3's minimum of 75 pixels" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "vgg16", "resnet50", "inception_v3"])
def test_every_backbone_builds_at_its_minimum_size(backbone):
    import keras

    from edgekit.train.models import BACKBONE_MIN_SIZE, build_image_model

    size = BACKBONE_MIN_SIZE[backbone]
    model = build_image_model(backbone, size, num_classes=3, weights=None, bn_momentum=0.9)
    assert model.output_shape == (None, 3)
    momenta = {layer.momentum for layer in model.layers[1].layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta in (set(), {0.9})  # VGG16 has no BatchNormalization
    probs = model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
