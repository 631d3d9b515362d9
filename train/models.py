"""Keras builders of the three model kinds. Export rebuilds the same graphs, so keep them plain."""

from __future__ import annotations

from edgekit.core import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402

TEXT_ARCHS = ("lstm", "gru", "bilstm", "transformer")
SPEECH_ARCHS = ("lstm", "gru", "bilstm")


def _recurrent(arch: str, units: int, return_sequences: bool, name: str):
    """The recurrent layer of `arch`: export fuses LSTMs (UNIDIRECTIONAL_SEQUENCE_LSTM, two for
    bilstm) and unrolls GRUs over the fixed length (export/lstm.py)."""
    if arch == "lstm":
        return keras.layers.LSTM(units, return_sequences=return_sequences, name=name)
    if arch == "gru":
        return keras.layers.GRU(units, return_sequences=return_sequences, name=name)
    if arch == "bilstm":  # half the units each way: the same output width as one LSTM
        return keras.layers.Bidirectional(keras.layers.LSTM(max(units // 2, 1), return_sequences=return_sequences),
                                          name=name)
    raise ValueError(f"unknown recurrent architecture {arch!r}")


def build_text_model(vocab_size: int, max_len: int, num_classes: int,
                     embedding_dim: int = 32, units: int = 32, arch: str = "lstm") -> keras.Model:
    """int32 token ids [N, max_len] (id 0 = padding, no mask) -> Embedding -> LSTM | GRU |
    Bidirectional(LSTM) -> Dense softmax; or arch "transformer": one encoder block (see
    transformer_classifier)."""
    if arch not in TEXT_ARCHS:
        raise ValueError(f"unknown text architecture {arch!r}; choose from {', '.join(TEXT_ARCHS)}")
    if arch == "transformer":
        return transformer_classifier(max_len, vocab_size, num_classes, dim=embedding_dim, heads=2,
                                      name="text_classifier")
    tokens = keras.Input(shape=(max_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(tokens)
    x = _recurrent(arch, units, False, "lstm" if arch == "lstm" else arch)(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(tokens, probs, name="text_classifier")


def transformer_classifier(max_len: int, vocab_size: int, num_classes: int, dim: int = 32, heads: int = 2,
                           name: str = "transformer") -> keras.Model:
    """Token ids -> token + learned position embeddings -> one encoder block (MultiHeadAttention,
    residual, LayerNormalization, GELU feed-forward) -> mean over positions -> Dense softmax.
    The positions come from `keras.ops` inside the graph, so the saved file needs no custom layer.
    Padding positions (id 0) are attended to like any token: no mask, as the converters need."""
    tokens = keras.Input((max_len,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = keras.layers.Embedding(vocab_size, dim, name="token_embedding")(tokens) + \
        keras.layers.Embedding(max_len, dim, name="position_embedding")(positions)
    attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm_1")(x + attention)
    ffn = keras.layers.Dense(dim * 2, activation="gelu", name="ffn_1")(x)
    x = keras.layers.LayerNormalization(name="norm_2")(x + keras.layers.Dense(dim, name="ffn_2")(ffn))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(tokens, probs, name=name)


def build_speech_model(num_frames: int, num_features: int, num_classes: int,
                       units: int = 64, arch: str = "lstm") -> keras.Model:
    """Feature frames [N, T, F] -> LSTM | GRU | Bidirectional(LSTM) (return_sequences) ->
    per-frame Dense softmax [N, T, C]."""
    if arch not in SPEECH_ARCHS:
        raise ValueError(f"unknown speech architecture {arch!r}; choose from {', '.join(SPEECH_ARCHS)}")
    frames = keras.Input(shape=(num_frames, num_features), dtype="float32", name="frames")
    x = _recurrent(arch, units, True, "lstm" if arch == "lstm" else arch)(frames)
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


def compile_classifier(model: keras.Model, learning_rate, x_sample, y_sample) -> None:
    """Adam + sparse categorical cross-entropy + accuracy, with their variables built before fit.

    Keras' TensorFlow trainer (no distribution strategy) creates the optimizer's and the compiled
    metrics' variables while tracing the first train step, and tf.function then traces the whole step a
    second time. Building them first (the metrics eagerly on a couple of samples) saves that trace:
    MobileNetV2's first step went from 43 s to 17 s on 2 cores."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    model.compute_metrics(x_sample, y_sample, model(x_sample, training=False), sample_weight=None)
    model.reset_metrics()
