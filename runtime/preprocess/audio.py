"""Numpy twin of the speech features computed in training with tf.signal: framed STFT with a
periodic Hann window, TensorFlow's mel weight matrix, log, optional MFCC (DCT-II), then per-feature
standardisation. Training computes them in float64 and so does this module, so the two agree to
~1e-12 before the float32 cast (float32 FFTs from different libraries would differ by ~1e-3 in quiet
mel bands after the log).

Audio files are read by `wav.py` (the reader training uses too) and resampled to the model's rate by
`resample.py`. A recording longer than the model's clip is cut to the clip for one-shot prediction;
when the part cut off holds sound (a frame within SOUND_DB of the recording's loudest frame, the
training rule for speech frames) an `AudioTrimmedWarning` says so and points to `listen`, which runs
the model over recordings of any length. `FeatureStream` computes the same frames block by block.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.preprocess.resample import resample
from edgekit.runtime.preprocess.wav import read_wav as read_wav_file

SOUND_DB = 30.0  # train/speech.py FRAME_THRESHOLD_DB: frames this close to the loudest one are speech


class AudioTrimmedWarning(UserWarning):
    """A recording longer than the model's clip had sound past the clip's end, which was not heard."""


def read_wav(source, expected_rate: int | None = None, name: str | None = None) -> np.ndarray:
    """A WAV file or binary file object (any format `wav.py` reads) -> float64 mono samples in [-1, 1],
    resampled to `expected_rate` when that differs from the file's rate (and clipped to [-1, 1] after
    resampling, whose ripple can overshoot a full-scale signal slightly)."""
    samples, rate = read_wav_file(source, name)
    if expected_rate is not None and rate != expected_rate:
        samples = np.clip(resample(samples, rate, expected_rate), -1.0, 1.0)
    return samples


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


class FeatureStream:
    """Standardised feature frames of a stream at the model's sample rate, block by block: frame i
    covers samples [i * frame_step, i * frame_step + frame_length) of the stream, exactly the frames
    `raw_features` takes from the whole recording. Keeps at most one frame of samples between calls."""

    def __init__(self, params: dict) -> None:
        self.params = params
        self._pending = np.zeros(0)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Samples (float, [-1, 1]) -> float32 [n, F]: every frame that the samples complete."""
        length, step = self.params["frame_length"], self.params["frame_step"]
        pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float64)])
        count = 0 if pending.size < length else 1 + (pending.size - length) // step
        self._pending = pending[count * step:]
        if count == 0:
            return np.zeros((0, self.num_features), np.float32)
        return standardize(raw_features(pending[:(count - 1) * step + length], self.params), self.params)

    @property
    def num_features(self) -> int:
        return len(self.params["mean"])


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


def has_sound_after(samples: np.ndarray, clip_samples: int, params: dict) -> bool:
    """Whether frames starting at or after `clip_samples` hold sound: energy within SOUND_DB of the
    recording's loudest frame (the training rule for speech frames)."""
    length, step = params["frame_length"], params["frame_step"]
    if samples.size < length:
        return False
    count = 1 + (samples.size - length) // step
    index = np.arange(length)[None, :] + step * np.arange(count)[:, None]
    energy_db = 10 * np.log10(np.mean(samples[index] ** 2, axis=-1) + 1e-10)
    late = np.arange(count) * step >= clip_samples
    return bool(late.any() and energy_db[late].max() >= energy_db.max() - SOUND_DB)


def fit_clip(samples: np.ndarray, params: dict, name: str) -> np.ndarray:
    """fit_length to the model's clip, with an AudioTrimmedWarning when sound is cut off."""
    clip = params["clip_samples"]
    if samples.size > clip and has_sound_after(samples, clip, params):
        rate = params["sample_rate"]
        warnings.warn(f"{name} is {samples.size / rate:.2f} s long with sound after {clip / rate:.2f} s: "
                      f"predict classifies its first {clip / rate:.2f} s only (use `listen` for longer "
                      "recordings)", AudioTrimmedWarning, stacklevel=4)
    return fit_length(samples, clip)


class AudioPreprocessor:
    """Waveforms (float arrays in [-1, 1], int16 arrays, or .wav paths) -> float32 [N, T, F].
    WAV files are resampled to the model's rate; arrays must already be at that rate."""

    def __init__(self, params: dict):
        self.params = params

    def __call__(self, clips) -> np.ndarray:
        if isinstance(clips, (str, Path)) or (isinstance(clips, np.ndarray) and clips.ndim == 1):
            clips = [clips]
        if len(clips) == 0:
            raise InvalidInputError("no audio given")
        batch = []
        for i, clip in enumerate(clips):
            name = f"audio input {i}"
            if isinstance(clip, (str, Path)):
                name, clip = str(clip), read_wav(clip, self.params["sample_rate"])
            batch.append(fit_clip(check_waveform(clip, i), self.params, name))
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
