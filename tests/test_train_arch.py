"""`edgekit train --arch` (text, speech) and `edgekit train image --weights FILE` (transfer learning
from a local backbone weights file, no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit import cli
from edgekit.core import UserError
from edgekit.train import train_model


def test_arch_is_checked_per_task():
    from edgekit.train import speech, text

    text.check_options({"arch": "transformer"})
    with pytest.raises(UserError, match="--arch must be one of lstm, gru, bilstm for the speech task"):
        speech.check_options({"arch": "transformer"})
    with pytest.raises(UserError, match="--arch"):
        text.check_options({"arch": "cnn"})
    from edgekit.train import command

    with pytest.raises(UserError, match="--arch does not apply to the image task"):
        command.run(cli.build_parser().parse_args(["train", "image", "--arch", "gru"]))


def test_weights_file_must_exist(tmp_path):
    from edgekit.train import image

    with pytest.raises(UserError, match="no such file"):
        image.check_options({"weights": str(tmp_path / "missing.weights.h5")})


@pytest.mark.slow  # trains twice (synthetic images, 32x32, one epoch each)
@pytest.mark.cost(89)
def test_image_training_from_a_local_backbone_weights_file(tmp_path):
    import keras

    first = train_model("image", tmp_path / "first", epochs=1, quick=True, weights="none", input_size=32,
                        max_samples=300)
    model = keras.models.load_model(first / "model.keras")
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    weights_file = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights_file)

    second = train_model("image", tmp_path / "second", epochs=1, quick=True, weights=str(weights_file),
                         input_size=32, max_samples=300)
    meta = json.loads((second / "edgekit.json").read_text())
    assert meta["architecture"]["weights"] == "file:backbone.weights.h5"
    # Transfer learning: the head trained on the frozen backbone, which still holds the file's weights.
    loaded = keras.models.load_model(second / "model.keras")
    new_backbone = next(layer for layer in loaded.layers if isinstance(layer, keras.Model))
    for saved, now in zip(backbone.get_weights(), new_backbone.get_weights()):
        np.testing.assert_array_equal(saved, now)

    with pytest.raises(UserError, match="cannot load resnet50 weights from .*backbone.weights.h5"):
        train_model("image", tmp_path / "third", epochs=1, quick=True, weights=str(weights_file),
                    input_size=32, backbone="resnet50", max_samples=300)
