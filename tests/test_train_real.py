"""Training on the real datasets in ../shared/data (slow): quick settings give confident models,
and default settings reach the documented accuracy targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _meta(model_dir):
    return json.loads((model_dir / "edgekit.json").read_text())


def test_quick_text_model_on_sms_spam(trained_dir, sms_spam):
    model_dir = trained_dir("text")
    meta = _meta(model_dir)
    assert meta["metrics"]["test_accuracy"] >= 0.95
    heldout, calibration = np.load(model_dir / "heldout.npz"), np.load(model_dir / "calibration.npz")
    assert len(heldout["y"]) <= 500 and calibration["x"].shape[0] >= 200
    # The heldout inputs are the tokenizer's ids of real texts: every row ends on a real token.
    assert np.all(heldout["x"][:, -1] != 0)


def test_quick_speech_model_on_fsdd(trained_dir, fsdd):
    model_dir = trained_dir("speech")
    meta = _meta(model_dir)
    assert meta["labels"] == ["_silence"] + [str(d) for d in range(10)]
    assert meta["data"]["test"] == 250  # takes 0-4 of 10 digits x 5 speakers
    # Measured (tests/training_spread.py, seeds 0-4, oneDNN on and off): 0.62-0.88; 0.676 on another CPU.
    # 0.55: below the worst with margin; chance is 0.1.
    assert meta["metrics"]["utterance_accuracy"] >= 0.55
    heldout = np.load(model_dir / "heldout.npz")
    assert heldout["utterance_y"].shape == (250,)

    from edgekit.runtime.kinds import make_preprocessor
    from edgekit.runtime.preprocess import utterance_probs
    from edgekit.train.io import load_model

    model, _ = load_model(model_dir)
    files = sorted(fsdd.glob("*_0.wav"))  # take 0 of every digit and speaker: test split
    inputs = make_preprocessor(meta["preprocessing"])(files)
    probs = utterance_probs(model.predict(inputs, verbose=0), meta["preprocessing"])
    predicted = [meta["labels"][i] for i in probs.argmax(1)]
    truth = [f.name.split("_")[0] for f in files]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) >= 0.55  # measured 0.68-0.88, same runs


def test_quick_image_model_on_cifar10_small(trained_dir, cifar10_small):
    model_dir = trained_dir("image")
    meta = _meta(model_dir)
    assert meta["data"]["test"] == 1000  # cifar10_small/test is the held-out set
    assert meta["architecture"]["weights"] is None and meta["architecture"]["bn_momentum"] == 0.9
    # Chance is 0.1; 10 epochs at 64 px from random init. Measured 0.38-0.43 (seeds 0-2, oneDNN on and off).
    assert meta["metrics"]["test_accuracy"] >= 0.3
    assert np.load(model_dir / "heldout.npz")["x"].shape == (500, 64, 64, 3)
    assert np.load(model_dir / "calibration.npz")["x"].shape[0] == 300


def test_default_text_settings_reach_target(tmp_path, sms_spam):
    from edgekit.train import train_model

    meta = _meta(train_model("text", out=tmp_path / "text", data=sms_spam))
    assert meta["metrics"]["test_accuracy"] >= 0.97


# Default speech training reaches 0.868 utterance accuracy here (seed 0; the previous release measured
# 0.960 elsewhere) and 0.945-0.970 with any one of the five speakers held out (tests/listen_holdout.py
# --default-training). Only these six runs are measured (a default training takes 90 s): 0.75 leaves
# the margin that the quick model's 26-point spread over seeds and kernels suggests.
@pytest.mark.cost(94)
def test_default_speech_settings_reach_target(tmp_path, fsdd):
    from edgekit.train import train_model

    meta = _meta(train_model("speech", out=tmp_path / "speech", data=fsdd))
    assert meta["metrics"]["utterance_accuracy"] >= 0.75


@pytest.mark.cost(455)
def test_default_image_settings_reach_target_from_random_init(tmp_path, cifar10_small):
    from edgekit.train import train_model

    meta = _meta(train_model("image", out=tmp_path / "image", data=cifar10_small, weights="none"))
    assert meta["metrics"]["test_accuracy"] >= 0.40
