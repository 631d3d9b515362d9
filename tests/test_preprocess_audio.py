"""The numpy speech features (runtime/preprocess/audio.py) against tf.signal, on real FSDD
recordings, plus WAV reading and the utterance rule."""

from __future__ import annotations

import io
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.kinds import make_preprocessor
from edgekit.runtime.preprocess import utterance_probs
from edgekit.runtime.preprocess.audio import fit_length, raw_features, read_wav
from edgekit.runtime.preprocess.wav import WavReader
from edgekit.runtime.preprocess.wav import read_wav as read_wav_file


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


def write_wav(path, samples, rate=8000, encoding="pcm", bits=16, extensible=False):
    """A WAV file of float samples in [-1, 1] ([n] mono or [n, channels]) in any format the reader takes."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[:, None] if samples.ndim == 1 else samples
    channels = samples.shape[1]
    if encoding == "float":
        data = samples.astype("<f4" if bits == 32 else "<f8").tobytes()
        tag = 3
    elif bits == 8:
        data = np.clip(np.rint(samples * 128 + 128), 0, 255).astype(np.uint8).tobytes()
        tag = 1
    else:
        scale = float(1 << (bits - 1))
        ints = np.clip(np.rint(samples * scale), -scale, scale - 1).astype(np.int64)
        data = (ints.astype("<i2").tobytes() if bits == 16 else ints.astype("<i4").tobytes() if bits == 32
                else np.stack([(ints >> s) & 0xFF for s in (0, 8, 16)], -1).astype(np.uint8).tobytes())
        tag = 1
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:  # cbSize, valid bits, channel mask, subformat GUID (tag + the standard suffix)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes.fromhex(
            "000000001000800000aa00389b71")
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\0"
    chunks += b"data" + struct.pack("<I", len(data)) + data
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


FORMATS = [("pcm", 8, False, 1 / 128), ("pcm", 16, False, 1 / 32768), ("pcm", 24, False, 2.0 ** -23),
           ("pcm", 32, False, 2.0 ** -31), ("float", 32, False, 1e-7), ("float", 64, False, 0.0),
           ("pcm", 24, True, 2.0 ** -23), ("float", 32, True, 1e-7)]


@pytest.mark.parametrize("encoding, bits, extensible, step", FORMATS)
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_wav_formats_and_channels_are_read(tmp_path, encoding, bits, extensible, step, channels):
    rng = np.random.default_rng(bits + channels)
    samples = rng.uniform(-0.9, 0.9, size=(1000, channels))
    path = write_wav(tmp_path / "x.wav", samples, 22050, encoding, bits, extensible)
    got, rate = read_wav_file(path)
    assert rate == 22050 and got.dtype == np.float64 and got.shape == (1000,)
    np.testing.assert_allclose(got, samples.mean(axis=1), rtol=0, atol=step + 1e-12)


def test_16_bit_mono_is_read_exactly_as_training_always_did(fsdd):
    for path in sorted(fsdd.glob("*.wav"))[::250]:
        with wave.open(str(path)) as w:
            expected = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
        got, rate = read_wav_file(path)
        assert rate == 8000
        np.testing.assert_array_equal(got, expected)


def test_wav_streams_of_unknown_length_are_read_in_blocks(tmp_path):
    samples = np.random.default_rng(0).uniform(-1, 1, 5000)
    data = bytearray(write_wav(tmp_path / "x.wav", samples).read_bytes())
    data[data.index(b"data") + 4:data.index(b"data") + 8] = b"\xff\xff\xff\xff"  # as `arecord` writes
    with WavReader(io.BufferedReader(io.BytesIO(bytes(data))), name="stdin") as reader:
        assert reader.num_frames is None
        blocks = list(reader.blocks(frames=777))
    assert [b.size for b in blocks[:-1]] == [777] * (len(blocks) - 1)
    np.testing.assert_allclose(np.concatenate(blocks), samples, atol=1 / 32768)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"RIFF\x00\x00 definitely not audio"), "cannot read .* RIFF/WAVE"),
    (lambda p: p.write_bytes(b"RIFX" + bytes(4) + b"WAVE"), "RIFX files .* not supported"),
    (lambda p: write_wav(p, np.zeros(10), bits=16).write_bytes(
        p.read_bytes().replace(struct.pack("<HH", 1, 1), struct.pack("<HH", 6, 1), 1)), "A-law audio"),
    (lambda p: write_wav(p, np.zeros(10), encoding="float", bits=16 * 2).write_bytes(
        p.read_bytes().replace(struct.pack("<HH", 4, 32), struct.pack("<HH", 2, 16), 1)), "16-bit float"),
    (lambda p: p.write_bytes(b"RIFF" + bytes(4) + b"WAVEfmt " + struct.pack("<I", 16) + bytes(4)),
     "ends inside its header"),
])
def test_unsupported_wav_files_raise_one_line(tmp_path, make, message):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(InvalidInputError, match=message) as info:
        read_wav(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_resampler_matches_soxr_on_fsdd(fsdd, rate):
    """Measured: the numpy resampler and libsoxr (VHQ) differ by 0.14-0.3% rms of the signal (-50 to
    -57 dB), the difference being in the transition band near the lower rate's Nyquist frequency."""
    soxr = pytest.importorskip("soxr")
    from edgekit.runtime.preprocess.resample import Resampler, resample

    original, _ = read_wav_file(sorted(fsdd.glob("3_jackson_*.wav"))[7])
    for signal, rate_in, rate_out in ((original, 8000, rate), (soxr.resample(original, 8000, rate, "VHQ"), rate, 8000)):
        ours, theirs = resample(signal, rate_in, rate_out), soxr.resample(signal, rate_in, rate_out, "VHQ")
        assert abs(ours.size - theirs.size) <= 1
        n = min(ours.size, theirs.size)
        relative = np.sqrt(np.mean((ours[:n] - theirs[:n]) ** 2) / np.mean(theirs[:n] ** 2))
        assert relative < 0.01, (rate_in, rate_out, relative)
        # Block by block (blocks of random sizes) gives the same samples as one call.
        streamer, rng, parts, i = Resampler(rate_in, rate_out), np.random.default_rng(rate), [], 0
        while i < signal.size:
            step = int(rng.integers(1, 3000))
            parts.append(streamer.process(signal[i:i + step]))
            i += step
        np.testing.assert_allclose(np.concatenate(parts + [streamer.flush()]), ours, rtol=0, atol=1e-12)


def test_feature_stream_gives_the_frames_of_one_pass(fsdd):
    from edgekit.runtime.preprocess.audio import FeatureStream, standardize
    from edgekit.train.speech import feature_params

    params = feature_params(8000, "log_mel")
    params.update(mean=[-8.0] * 40, std=[2.0] * 40)
    recording = np.concatenate([read_wav_file(f)[0] for f in sorted(fsdd.glob("*_lucas_1*.wav"))])
    expected = standardize(raw_features(recording, params), params)
    stream, rng, parts, i = FeatureStream(params), np.random.default_rng(0), [], 0
    while i < recording.size:
        step = int(rng.integers(1, 700))
        parts.append(stream.push(recording[i:i + step]))
        i += step
    got = np.concatenate(parts)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_a_long_recording_is_not_cut_silently(fsdd, tmp_path):
    from edgekit.runtime.preprocess.audio import AudioTrimmedWarning
    from edgekit.train.speech import feature_params

    params = feature_params(8000, "log_mel")
    params.update(mean=[0.0] * 40, std=[1.0] * 40)
    pre = make_preprocessor(params)
    word, _ = read_wav_file(sorted(fsdd.glob("*.wav"))[0])
    two_words = write_wav(tmp_path / "two.wav", np.concatenate([word, np.zeros(8000 - word.size), word]))
    with pytest.warns(AudioTrimmedWarning, match=r"two.wav is 1\.\d+ s long .*use `listen`"):
        pre([two_words])
    trailing_silence = write_wav(tmp_path / "quiet.wav", np.concatenate([word, np.zeros(9000)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre([trailing_silence])  # only silence is cut: no warning


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


# (rate, channels, encoding, bits, extensible): what USB microphones and phones record
VARIANTS = {"16k": (16000, 1, "pcm", 16, False), "22k": (22050, 1, "pcm", 16, False),
            "44k": (44100, 1, "pcm", 16, False), "48k": (48000, 1, "pcm", 16, False),
            "stereo-44k": (44100, 2, "pcm", 16, False), "24bit-48k": (48000, 1, "pcm", 24, False),
            "float32-16k": (16000, 1, "float", 32, False), "extensible-24bit-stereo-48k": (48000, 2, "pcm", 24, True)}


def test_every_wav_variant_gets_the_label_of_the_8k_original(fsdd, exported_dir, tmp_path):
    """FSDD test takes rewritten as the variants above (upsampled by libsoxr), classified by the runtime
    CLI alone (no TensorFlow in that process): each gets the label of its 8 kHz original."""
    import json
    import subprocess
    import sys

    soxr = pytest.importorskip("soxr")
    originals = [sorted(fsdd.glob(f"{digit}_*_{digit % 5}.wav"))[digit % 5] for digit in range(10)]
    variants = []
    for path in originals:
        samples, _ = read_wav_file(path)
        for name, (rate, channels, encoding, bits, extensible) in VARIANTS.items():
            signal = soxr.resample(samples, 8000, rate, "VHQ")
            if channels == 2:  # a second microphone a little quieter
                signal = np.stack([signal, 0.7 * signal], axis=1)
            variants.append(write_wav(tmp_path / f"{path.stem}-{name}.wav", np.clip(signal, -1, 1), rate,
                                      encoding, bits, extensible))
    code = ("import sys; from edgekit.runtime.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(rc)")
    bundle = exported_dir("speech") / "speech-tflite-fp32"
    proc = subprocess.run([sys.executable, "-c", code, "predict", str(bundle), *map(str, originals + variants),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = {Path(row["input"]).stem: row["label"] for row in json.loads(proc.stdout)["predictions"]}
    wrong = [f"{p.stem}-{name}: {labels[f'{p.stem}-{name}']} != {labels[p.stem]}"
             for p in originals for name in VARIANTS if labels[f"{p.stem}-{name}"] != labels[p.stem]]
    assert not wrong, wrong
