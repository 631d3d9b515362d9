"""Keras builders of the three model kinds. Export rebuilds the same graphs, so keep them plain."""

from __future__ import annotations

from edgekit.core import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402


def build_text_model(vocab_size: int, max_len: int, num_classes: int,
                     embedding_dim: int = 32, units: int = 32) -> keras.Model:
    """Embedding -> LSTM -> Dense softmax over int32 token ids [N, max_len] (id 0 = padding)."""
    tokens = keras.Input(shape=(max_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(tokens)
    x = keras.layers.LSTM(units, name="lstm")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(tokens, probs, name="text_classifier")


def build_speech_model(num_frames: int, num_features: int, num_classes: int,
                       units: int = 64) -> keras.Model:
    """Feature frames [N, T, F] -> LSTM(return_sequences) -> per-frame Dense softmax [N, T, C]."""
    frames = keras.Input(shape=(num_frames, num_features), dtype="float32", name="frames")
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm")(frames)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(frames, probs, name="speech_frame_classifier")


# Smallest input side each keras.applications backbone accepts with include_top=False.
BACKBONE_MIN_SIZE = {"mobilenet_v2": 32, "vgg16": 32, "resnet50": 32, "inception_v3": 75}


def build_backbone(backbone: str, input_size: int, weights: str | None, alpha: float = 1.0):
    """keras.applications backbone without its classifier; weights None (random) or "imagenet"."""
    apps = keras.applications
    shape = (input_size, input_size, 3)
    if backbone == "mobilenet_v2":
        return apps.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=weights)
    if backbone == "vgg16":
        return apps.VGG16(input_shape=shape, include_top=False, weights=weights)
    if backbone == "resnet50":
        return apps.ResNet50(input_shape=shape, include_top=False, weights=weights)
    if backbone == "inception_v3":
        return apps.InceptionV3(input_shape=shape, include_top=False, weights=weights)
    raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONE_MIN_SIZE)}")


def build_image_model(backbone: str, input_size: int, num_classes: int, weights: str | None = None,
                      alpha: float = 1.0, dropout: float = 0.2, bn_momentum: float | None = None,
                      base=None) -> keras.Model:
    """Preprocessed images [N, S, S, 3] -> backbone -> GlobalAveragePooling2D -> Dropout -> Dense.

    bn_momentum overrides every BatchNormalization momentum: Keras' 0.99/0.999 defaults suit
    ImageNet-length runs; from random init with ~50 steps per epoch the moving statistics used at
    inference lag far behind the weights and test accuracy stays at chance.
    `base` passes an already built backbone (e.g. loaded with ImageNet weights)."""
    if base is None:
        base = build_backbone(backbone, input_size, weights, alpha)
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    images = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="images")
    # Pretrained backbones keep BatchNormalization in inference mode, also while fine-tuning.
    x = base(images, training=False) if weights == "imagenet" else base(images)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(images, probs, name=f"{backbone}_classifier")
