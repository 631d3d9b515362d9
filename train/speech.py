"""Speech (spoken word) classifier: log-mel or MFCC frames -> LSTM(return_sequences) (or --arch gru,
bilstm) -> per-frame softmax over the words plus a silence class.

Frame targets: frames whose energy is within FRAME_THRESHOLD_DB of the clip's loudest frame get the
clip's word, the others "_silence". The utterance label combines the frames: sum of each class's
probability over frames, silence excluded, argmax (runtime.preprocess.utterance_probs).
Features are computed with tf.signal in float64 here and in numpy float64 on the device
(runtime/preprocess/audio.py), standardised with the training split's per-feature mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core import UserError, log
from edgekit.runtime.preprocess.audio import fit_length, utterance_probs
from edgekit.train import TrainResult, accuracy, pick_calibration, pick_heldout
from edgekit.train.data import Dataset, load_wavs
from edgekit.train.models import SPEECH_ARCHS, build_speech_model, compile_classifier

SILENCE = "_silence"
FRAME_THRESHOLD_DB = 30.0
UTTERANCE_RULE = ("sum_nonsilence: sum each class's frame probabilities over the clip, drop the "
                  "silence class, renormalise, argmax")
FEATURES = {"frame_length": 256, "frame_step": 128, "fft_length": 256, "window": "hann_periodic",
            "num_mel_bins": 40, "lower_edge_hertz": 20.0, "log_offset": 1e-6, "num_mfcc": 13}
CLIP_SECONDS = 1.0  # FSDD: 99% of recordings are shorter than 0.93 s; longer ones lose their end
DEFAULTS = {"epochs": 30, "batch_size": 32, "units": 64, "learning_rate": 3e-3, "features": "log_mel"}
QUICK = {"epochs": 8, "batch_size": 16}  # twice the steps per epoch: 0.77 vs 0.72 on fsdd


def check_options(options: dict) -> None:
    for key in ("text_column", "label_column", "input_size", "fine_tune_epochs"):
        if key in options:
            raise UserError(f"--{key.replace('_', '-')} does not apply to the speech task")
    if options.get("arch", "lstm") not in SPEECH_ARCHS:
        raise UserError(f"--arch must be one of {', '.join(SPEECH_ARCHS)} for the speech task, "
                        f"got {options['arch']!r}")
    if options.get("features", "log_mel") not in ("log_mel", "mfcc"):
        raise UserError(f"--features must be log_mel or mfcc, got {options['features']!r}")


def load(data, seed: int, options: dict) -> Dataset:
    if data is None:
        from edgekit.train import synthetic

        return synthetic.speech(seed)
    return load_wavs(data, seed, options.get("max_samples"))


def feature_params(sample_rate: int, features: str) -> dict:
    clip_samples = int(round(CLIP_SECONDS * sample_rate))
    params = {"type": "speech", "sample_rate": sample_rate, "clip_samples": clip_samples,
              **FEATURES, "upper_edge_hertz": sample_rate / 2.0, "features": features}
    if clip_samples < params["frame_length"]:
        raise UserError(f"clips of {clip_samples} samples are shorter than one frame")
    params["num_frames"] = 1 + (clip_samples - params["frame_length"]) // params["frame_step"]
    return params


def tf_features(clips: np.ndarray, params: dict) -> np.ndarray:
    """Unstandardised features [N, T, F] (float64) with tf.signal: the reference for the runtime."""
    import tensorflow as tf

    signals = tf.constant(clips, dtype=tf.float64)
    stft = tf.signal.stft(signals, params["frame_length"], params["frame_step"],
                          params["fft_length"], window_fn=tf.signal.hann_window, pad_end=False)
    magnitude = tf.abs(stft)
    weights = tf.signal.linear_to_mel_weight_matrix(
        params["num_mel_bins"], magnitude.shape[-1], params["sample_rate"],
        params["lower_edge_hertz"], params["upper_edge_hertz"], dtype=tf.float64)
    log_mel = tf.math.log(tf.tensordot(magnitude, weights, 1) + params["log_offset"])
    if params["features"] == "mfcc":
        return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :params["num_mfcc"]].numpy()
    return log_mel.numpy()


def frame_targets(clips: np.ndarray, labels: np.ndarray, params: dict) -> np.ndarray:
    """[N, T] class ids: the clip's class (index + 1) where the frame is loud, else 0 (silence)."""
    length, step = params["frame_length"], params["frame_step"]
    index = np.arange(length)[None, :] + step * np.arange(params["num_frames"])[:, None]
    energy_db = 10 * np.log10(np.mean(clips[:, index] ** 2, axis=-1) + 1e-10)  # [N, T]
    loud = energy_db >= energy_db.max(axis=1, keepdims=True) - FRAME_THRESHOLD_DB
    return np.where(loud, labels[:, None] + 1, 0).astype(np.int64)


def fit(dataset: Dataset, workdir: Path, epochs: int | None, seed: int, quick: bool,
        options: dict) -> TrainResult:
    settings = dict(DEFAULTS, **(QUICK if quick else {}))
    epochs = epochs or settings["epochs"]
    batch_size = options.get("batch_size", settings["batch_size"])
    params = feature_params(dataset.extra["sample_rate"], options.get("features", settings["features"]))
    if SILENCE in dataset.labels:
        raise UserError(f"a class is named {SILENCE!r}, which is reserved for non-speech frames; "
                        "rename that folder")
    labels = [SILENCE] + dataset.labels
    splits = {}
    for name in ("train", "val", "test"):
        clips, y = dataset.splits[name]
        clips = np.stack([fit_length(c, params["clip_samples"]) for c in clips])
        splits[name] = (clips, y)
    log(f"computing {params['features']} features ({params['num_frames']} frames of "
        f"{params['frame_length']} samples per {params['clip_samples']}-sample clip)")
    raw = {name: tf_features(clips, params) for name, (clips, _) in splits.items()}
    mean = raw["train"].reshape(-1, raw["train"].shape[-1]).mean(axis=0)
    std = raw["train"].reshape(-1, raw["train"].shape[-1]).std(axis=0) + 1e-6
    params.update(mean=mean.tolist(), std=std.tolist(), silence_label=SILENCE, silence_index=0,
                  frame_label_rule=f"frame energy within {FRAME_THRESHOLD_DB:g} dB of the clip's "
                                   "loudest frame -> the clip's class, else silence",
                  utterance_rule=UTTERANCE_RULE)
    x = {name: ((raw[name] - mean) / std).astype(np.float32) for name in splits}
    frames_y = {name: frame_targets(clips, y, params) for name, (clips, y) in splits.items()}
    utter_y = {name: y + 1 for name, (_, y) in splits.items()}  # index into labels (0 = silence)

    arch = options.get("arch", "lstm")
    architecture = {"kind": f"speech_{arch}", "arch": arch, "num_frames": params["num_frames"],
                    "num_features": x["train"].shape[-1], "num_classes": len(labels),
                    "units": settings["units"]}
    model = build_speech_model(**{k: v for k, v in architecture.items() if k != "kind"})
    compile_classifier(model, settings["learning_rate"], x["train"][:2], frames_y["train"][:2])
    model.fit(x["train"], frames_y["train"], validation_data=(x["val"], frames_y["val"]),
              epochs=epochs, batch_size=batch_size, verbose=2, shuffle=True)

    metrics = {}
    for name in ("train", "val", "test"):
        frame_probs = model.predict(x[name], batch_size=256, verbose=0)
        metrics[f"{name}_frame_accuracy"] = accuracy(frame_probs, frames_y[name])
        metrics[f"{name}_accuracy"] = accuracy(utterance_probs(frame_probs, params), utter_y[name])
    metrics["frame_accuracy"] = metrics["test_frame_accuracy"]
    metrics["utterance_accuracy"] = metrics["test_accuracy"]
    held = pick_heldout(len(utter_y["test"]), seed)
    return TrainResult(
        model=model, labels=labels, preprocessing=params, architecture=architecture,
        input_spec={"name": "frames", "shape": [None, params["num_frames"], x["train"].shape[-1]],
                    "dtype": "float32"},
        output_spec={"name": "probs", "shape": [None, params["num_frames"], len(labels)],
                     "dtype": "float32"},
        metrics=metrics, epochs=epochs,
        heldout={"x": x["test"][held], "y": frames_y["test"][held],
                 "utterance_y": utter_y["test"][held]},
        calibration=x["train"][pick_calibration(len(utter_y["train"]), seed)])
