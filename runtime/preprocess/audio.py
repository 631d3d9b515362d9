"""Numpy twin of the speech features computed in training with tf.signal: framed STFT with a
periodic Hann window, TensorFlow's mel weight matrix, log, optional MFCC (DCT-II), then per-feature
standardisation. Training computes them in float64 and so does this module, so the two agree to
~1e-12 before the float32 cast (float32 FFTs from different libraries would differ by ~1e-3 in quiet
mel bands after the log)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError


def read_wav(path: str | Path, expected_rate: int | None = None) -> np.ndarray:
    """16-bit PCM mono WAV -> float64 samples in [-1, 1) (int16 / 32768)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"audio file not found: {path}")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, count = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                            w.getnframes())
            raw = w.readframes(count)
    except (wave.Error, EOFError, OSError) as exc:
        raise InvalidInputError(f"cannot read {path} as a WAV file: {exc}") from None
    if width != 2:
        raise InvalidInputError(f"{path} has {8 * width}-bit samples; expected 16-bit PCM")
    if channels != 1:
        raise InvalidInputError(f"{path} has {channels} channels; expected mono")
    if expected_rate is not None and rate != expected_rate:
        raise InvalidInputError(f"{path} is sampled at {rate} Hz; the model expects {expected_rate} Hz "
                                "(resample it first)")
    samples = np.frombuffer(raw, dtype="<i2")
    if samples.size == 0:
        raise InvalidInputError(f"{path} holds no samples")
    return samples.astype(np.float64) / 32768.0


def fit_length(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """Trim the end or zero-pad the end to exactly clip_samples."""
    if samples.shape[-1] >= clip_samples:
        return samples[..., :clip_samples]
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, clip_samples - samples.shape[-1])]
    return np.pad(samples, pad)


def hann_periodic(length: int) -> np.ndarray:
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def stft_magnitude(samples: np.ndarray, frame_length: int, frame_step: int,
                   fft_length: int) -> np.ndarray:
    """|tf.signal.stft(x, frame_length, frame_step, fft_length)| (pad_end=False): [..., T, bins]."""
    num_frames = 1 + (samples.shape[-1] - frame_length) // frame_step
    if num_frames < 1:
        raise InvalidInputError(f"audio of {samples.shape[-1]} samples is shorter than one frame "
                                f"({frame_length})")
    index = np.arange(frame_length)[None, :] + frame_step * np.arange(num_frames)[:, None]
    frames = samples[..., index] * hann_periodic(frame_length)
    return np.abs(np.fft.rfft(frames, n=fft_length, axis=-1))


def _hertz_to_mel(hertz):
    return 1127.0 * np.log1p(np.asarray(hertz, dtype=np.float64) / 700.0)


def mel_weight_matrix(num_mel_bins: int, num_spectrogram_bins: int, sample_rate: float,
                      lower_edge_hertz: float, upper_edge_hertz: float) -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix: triangular filters in HTK mel, DC bin zeroed."""
    linear_hertz = np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins)[1:]
    spectrogram_mel = _hertz_to_mel(linear_hertz)[:, None]
    edges = np.linspace(_hertz_to_mel(lower_edge_hertz), _hertz_to_mel(upper_edge_hertz),
                        num_mel_bins + 2)
    lower, center, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    lower_slopes = (spectrogram_mel - lower) / (center - lower)
    upper_slopes = (upper - spectrogram_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.pad(weights, [[1, 0], [0, 0]])


def mfcc_from_log_mel(log_mel: np.ndarray, num_mfcc: int) -> np.ndarray:
    """tf.signal.mfccs_from_log_mel_spectrograms: unnormalised DCT-II scaled by 1/sqrt(2M)."""
    m = log_mel.shape[-1]
    k = np.arange(num_mfcc)[:, None]
    n = np.arange(m)[None, :]
    basis = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2.0 * m))  # [num_mfcc, M]
    return (log_mel @ basis.T) / np.sqrt(2.0 * m)


def raw_features(samples: np.ndarray, params: dict) -> np.ndarray:
    """Unstandardised log-mel or MFCC frames [..., T, F] (float64) of clips already fit to length."""
    spectrum = stft_magnitude(samples, params["frame_length"], params["frame_step"],
                              params["fft_length"])
    weights = mel_weight_matrix(params["num_mel_bins"], spectrum.shape[-1], params["sample_rate"],
                                params["lower_edge_hertz"], params["upper_edge_hertz"])
    log_mel = np.log(spectrum @ weights + params["log_offset"])
    if params["features"] == "mfcc":
        return mfcc_from_log_mel(log_mel, params["num_mfcc"])
    if params["features"] != "log_mel":
        raise InvalidInputError(f"unknown speech features {params['features']!r}")
    return log_mel


def standardize(features: np.ndarray, params: dict) -> np.ndarray:
    mean = np.asarray(params["mean"], dtype=np.float64)
    std = np.asarray(params["std"], dtype=np.float64)
    return ((features - mean) / std).astype(np.float32)


def check_waveform(samples, index: int) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InvalidInputError(f"audio input {index} has shape {tuple(samples.shape)}; expected a "
                                "1-D mono waveform")
    if samples.size == 0:
        raise InvalidInputError(f"audio input {index} is empty")
    if not (np.issubdtype(samples.dtype, np.floating) or np.issubdtype(samples.dtype, np.integer)):
        raise InvalidInputError(f"audio input {index} has dtype {samples.dtype}; expected float "
                                "samples in [-1, 1] or int16")
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    samples = samples.astype(np.float64)
    if not np.all(np.isfinite(samples)):
        raise InvalidInputError(f"audio input {index} contains NaN or inf")
    if np.abs(samples).max() > 1.0 + 1e-6:
        raise InvalidInputError(f"audio input {index} has samples outside [-1, 1] (max "
                                f"{np.abs(samples).max():.3g}); pass float audio scaled to [-1, 1]")
    return samples


class AudioPreprocessor:
    """Waveforms (float arrays in [-1, 1], int16 arrays, or .wav paths) -> float32 [N, T, F]."""

    def __init__(self, params: dict):
        self.params = params

    def __call__(self, clips) -> np.ndarray:
        if isinstance(clips, (str, Path)) or (isinstance(clips, np.ndarray) and clips.ndim == 1):
            clips = [clips]
        if len(clips) == 0:
            raise InvalidInputError("no audio given")
        batch = []
        for i, clip in enumerate(clips):
            if isinstance(clip, (str, Path)):
                clip = read_wav(clip, self.params["sample_rate"])
            batch.append(fit_length(check_waveform(clip, i), self.params["clip_samples"]))
        return standardize(raw_features(np.stack(batch), self.params), self.params)


def utterance_probs(frame_probs: np.ndarray, params: dict) -> np.ndarray:
    """Per-frame probabilities [N, T, C] (or [T, C]) -> utterance probabilities [N, C].

    Rule ("sum_nonsilence"): sum each class's probability over frames, drop the silence class, and
    renormalise; the silence column stays in the output as 0 so label indices are unchanged."""
    probs = np.asarray(frame_probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3:
        raise InvalidInputError(f"frame probabilities have shape {probs.shape}; expected [N, T, C]")
    silence = int(params.get("silence_index", 0))
    summed = probs.sum(axis=1)
    summed[:, silence] = 0.0
    total = summed.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return (summed / total).astype(np.float32)
