"""The numpy speech features (runtime/preprocess/audio.py) against tf.signal, on real FSDD
recordings, plus WAV reading and the utterance rule."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.preprocess import make_preprocessor, utterance_probs
from edgekit.runtime.preprocess.audio import fit_length, raw_features, read_wav


def _write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2" if width == 2 else "u1").tobytes())
    return path


def _fsdd_clips(fsdd, count=60):
    files = sorted(fsdd.glob("*.wav"))[::41][:count]  # every speaker and digit, short and long
    return files, np.stack([fit_length(read_wav(f, 8000), 8000) for f in files])


@pytest.mark.parametrize("features", ["log_mel", "mfcc"])
def test_numpy_features_match_tf_signal_on_fsdd(fsdd, features):
    from edgekit.train.speech import feature_params, tf_features

    files, clips = _fsdd_clips(fsdd)
    params = feature_params(8000, features)
    reference = tf_features(clips, params)
    mean = reference.reshape(-1, reference.shape[-1]).mean(0)
    std = reference.reshape(-1, reference.shape[-1]).std(0) + 1e-6
    params.update(mean=mean.tolist(), std=std.tolist())
    expected = ((reference - mean) / std).astype(np.float32)
    # Through the public entry point, from the WAV paths, as the device does it.
    actual = make_preprocessor(params)([str(f) for f in files])
    assert actual.shape == (len(files), params["num_frames"], reference.shape[-1])
    # Both sides compute in float64; 1e-4 leaves room for the final float32 rounding only.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    assert np.abs(raw_features(clips, params) - reference).max() < 1e-8


def test_waveform_arrays_and_wav_files_give_the_same_features(fsdd):
    from edgekit.train.speech import feature_params

    params = feature_params(8000, "log_mel")
    params.update(mean=[0.0] * 40, std=[1.0] * 40)
    path = sorted(fsdd.glob("*.wav"))[0]
    pre = make_preprocessor(params)
    with wave.open(str(path)) as w:
        int16 = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    np.testing.assert_array_equal(pre([path]), pre([int16.astype(np.float32) / 32768.0]))
    np.testing.assert_array_equal(pre([path]), pre([int16]))


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 16000}, "16000 Hz; the model expects 8000"),
    ({"channels": 2}, "2 channels"),
    ({"width": 1}, "8-bit"),
])
def test_unsupported_wav_files_raise_invalid_input(tmp_path, kwargs, message):
    path = _write_wav(tmp_path / "clip.wav", np.zeros(800 * kwargs.get("channels", 1)), **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        read_wav(path, expected_rate=8000)


def test_unreadable_wav_raises_invalid_input(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00 definitely not audio")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_wav(tmp_path / "bad.wav")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 100)), "1-D"),
    (np.zeros(0), "empty"),
    (np.array([0.0, np.nan, 0.1]), "NaN"),
    (np.array([0.0, 3.0]), "outside"),
    (np.array(["a", "b"]), "dtype"),
])
def test_bad_waveforms_raise_invalid_input(bad, message):
    from edgekit.train.speech import feature_params

    params = feature_params(8000, "mfcc")
    params.update(mean=[0.0] * 13, std=[1.0] * 13)
    with pytest.raises(InvalidInputError, match=message):
        make_preprocessor(params)([bad])


def test_utterance_probs_ignore_silence_and_sum_frames():
    frames = np.zeros((1, 4, 3), np.float32)
    frames[0, :, 0] = [0.9, 0.9, 0.2, 0.2]  # mostly silence
    frames[0, :, 1] = [0.05, 0.05, 0.7, 0.1]
    frames[0, :, 2] = [0.05, 0.05, 0.1, 0.7]
    out = utterance_probs(frames, {"silence_index": 0})
    assert out.shape == (1, 3)
    assert out[0, 0] == 0.0
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 1:], [0.9 / 1.8, 0.9 / 1.8], atol=1e-6)
    frames[0, 3, 2] = 0.9
    assert utterance_probs(frames, {"silence_index": 0}).argmax() == 2
