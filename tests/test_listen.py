"""Continuous listening (runtime/listen.py): word detection, chunked streaming against one pass, a
transcribed recording of spoken digits, memory on long streams, and quiet backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgekit.runtime.listen import Detection, WordDetector

SPEAKER = "george"    # the first FSDD speaker in alphabetical order (not chosen by result)
NOISE_DBFS = -60.0    # the pauses hold low noise, as a microphone gives, not digital silence
NO_TF = ("import sys; from edgekit.runtime.cli import main; rc = main(sys.argv[1:]); "
         "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(rc)")
# Peak memory from inside the child: VmHWM, since Linux carries ru_maxrss (and so os.wait4's) across exec,
# which would count the forking test process's own size.
NO_TF_PEAK = NO_TF.replace("sys.exit(rc)", "print('VmHWM', next(l.split()[1] for l in open('/proc/self/status') "
                                            "if l.startswith('VmHWM')), file=sys.stderr); sys.exit(rc)")
PARAMS = {"sample_rate": 8000, "frame_step": 128, "frame_length": 256, "silence_index": 0}


def test_word_detector_bridges_short_gaps_and_drops_clicks():
    labels = ["_silence", "a", "b"]
    silence, a, b = [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]
    # a word of 10 frames with a 3-frame dip inside, a 2-frame click, then a second word
    frames = [silence] * 5 + [a] * 4 + [silence] * 3 + [a] * 6 + [silence] * 20 + [b] * 2 + [silence] * 20
    frames += [b] * 8 + [silence] * 3
    detector = WordDetector(labels, PARAMS)
    words = []
    for i in range(0, len(frames), 7):  # any chunking gives the same words
        words += detector.push(np.array(frames[i:i + 7]))
    words += detector.flush()
    assert [w.label for w in words] == ["a", "b"]
    assert words[0].start == pytest.approx(5 * 128 / 8000)
    assert words[0].end == pytest.approx((17 * 128 + 256) / 8000)
    # labelled over frames 5-27: 10 "a" frames, the 3-frame dip and 5 + 5 frames after the word (max gap
    # and label tail), silence dropped, renormalised
    assert words[0].confidence == pytest.approx((10 * 0.8 + 13 * 0.05) / (10 * 0.9 + 13 * 0.1))
    assert words[1].to_dict()["label"] == "b" and set(words[1].to_dict()) == {"start", "end", "label", "confidence"}


def test_word_detector_quiet_frames_and_the_label_tail():
    labels = ["_silence", "a", "b"]
    silence, a, b = [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]
    # "a", 7 silent frames (past the 5-frame gap, inside the 5-frame label tail), then "b": two words
    frames = np.array([a] * 8 + [silence] * 7 + [b] * 8 + [silence] * 12)
    detector = WordDetector(labels, PARAMS)
    words = detector.push(frames) + detector.flush()
    assert [w.label for w in words] == ["a", "b"] and words[1].start == pytest.approx(15 * 128 / 8000)
    # frames the model calls speech but that sit at the noise floor are silence: the word ends there
    quiet = np.zeros(len(frames), bool)
    quiet[6:8] = True
    detector = WordDetector(labels, PARAMS)
    words = detector.push(frames, quiet) + detector.flush()
    assert words[0].end == pytest.approx((5 * 128 + 256) / 8000) and words[0].label == "a"


# -- real speech model ------------------------------------------------------------------------------

def _recording(fsdd, takes=range(5), seed=0, speaker=SPEAKER):
    """Takes of a speaker's digits 0-9 in a shuffled order, separated by 0.4-1.0 s pauses of low noise:
    (8 kHz samples, [(start s, end s, digit)], clip files in the order spoken)."""
    from edgekit.runtime.preprocess.wav import read_wav

    rng = np.random.default_rng(seed)
    files = [fsdd / f"{digit}_{speaker}_{take}.wav" for digit in range(10) for take in takes]
    files = [files[i] for i in rng.permutation(len(files))]
    noise = 10 ** (NOISE_DBFS / 20)
    parts, truth, position = [rng.normal(0, noise, 4000)], [], 4000
    for f in files:
        clip, _ = read_wav(f)
        truth.append((position / 8000, (position + clip.size) / 8000, f.name.split("_")[0]))
        pause = rng.normal(0, noise, int(rng.integers(3200, 8000)))
        parts += [clip, pause]
        position += clip.size + pause.size
    return np.concatenate(parts), truth, files


def _per_digit_accuracy(words: list[dict], truth) -> tuple[float, int]:
    """A digit is right when the detected word overlapping it most has its label; also the number of
    detections that overlap no digit (insertions)."""
    right = 0
    for start, end, digit in truth:
        overlaps = [(min(end, w["end"]) - max(start, w["start"]), w) for w in words
                    if min(end, w["end"]) > max(start, w["start"])]
        right += bool(overlaps) and max(overlaps, key=lambda o: o[0])[1]["label"] == digit
    inserted = sum(not any(min(e, w["end"]) > max(s, w["start"]) for s, e, _ in truth) for w in words)
    return right / len(truth), inserted


def _keras_full_sequence(model_dir: Path):
    """The trained Keras speech model with a free time dimension, for one pass over a whole recording."""
    import keras

    trained = keras.models.load_model(model_dir / "model.keras")
    frames = keras.Input(shape=(None, trained.input_shape[-1]))
    x = frames
    for layer in trained.layers[1:]:
        twin = layer.__class__.from_config(layer.get_config())
        x = twin(x)
        twin.set_weights(layer.get_weights())
    return keras.Model(frames, x)


def test_chunked_streaming_gives_the_frame_outputs_of_one_pass(fsdd, trained_dir, exported_dir):
    """Reference: the Keras model run once over the whole recording's features (a free time axis,
    the trained weights). The fp32 TFLite bundle takes 61 frames per invoke; the listener carries the
    LSTM state from each invoke to the next and is fed blocks of random sizes, so chunk, STFT-frame
    and block boundaries all fall in different places. Measured max abs difference: 3e-7."""
    from edgekit import runtime
    from edgekit.runtime.listen import Listener
    from edgekit.runtime.preprocess.audio import raw_features, standardize

    recording, _, _ = _recording(fsdd, takes=range(2))
    bundles = exported_dir("speech")
    with runtime.load(bundles / "speech-tflite-fp32") as model:
        params = model.bundle.preprocessing
        reference = _keras_full_sequence(trained_dir("speech"))(
            standardize(raw_features(recording, params), params)[None]).numpy()[0]
        # Without the state resets at word onsets (runtime/listen.py) the frames equal one pass; the
        # second stream resets at each of its 20 words.
        listener, other = Listener(model, 8000, reset_at_onsets=False), Listener(model, 8000)
        assert listener.carries_state
        rng, parts, i = np.random.default_rng(1), [], 0
        while i < recording.size:
            step = int(rng.integers(1, 3000))
            parts.append(listener.frames(recording[i:i + step]))
            other.frames(recording[::-1][i:i + step])  # a second stream on the same interpreter
            i += step
        streamed = np.concatenate(parts + [listener.flush_frames()])
        other.flush_frames()
    assert listener.resets == 0 and abs(other.resets - 20) <= 3  # 20 words: one reset at each onset
    assert streamed.shape == reference.shape  # 1 + (N - 256) // 128 frames, like one pass
    np.testing.assert_allclose(streamed, reference, rtol=0, atol=1e-5)

    # ONNX cannot carry state: overlapping windows give every frame >= 30 frames of context.
    with runtime.load(bundles / "speech-onnx-fp32") as model:
        listener = Listener(model, 8000)
        assert not listener.carries_state
        windowed = np.concatenate([listener.frames(recording[i:i + 4000]) for i in range(0, recording.size, 4000)]
                                  + [listener.flush_frames()])
    agreement = float(np.mean(windowed.argmax(-1) == reference.argmax(-1)))
    print(f"onnx overlapping windows: top-1 frame agreement with one pass {agreement:.3f}, "
          f"max abs difference {np.abs(windowed - reference).max():.3f}")
    assert windowed.shape == reference.shape and agreement > 0.8


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-c", NO_TF, *map(str, args)], capture_output=True, text=True,
                          env=env, **kwargs)


def test_listen_transcribes_a_44k_stereo_recording(fsdd, exported_dir, tmp_path):
    """Digits 0-9, takes 0-4 (the held-out test takes) of one speaker, with pauses, at 44.1 kHz
    stereo (upsampled by libsoxr, not by the resampler under test): `listen` against one-shot
    `predict` on the same 50 takes, both in a process without TensorFlow."""
    soxr = pytest.importorskip("soxr")
    from test_preprocess_audio import write_wav

    recording, truth, files = _recording(fsdd)
    stereo = soxr.resample(np.stack([recording, 0.8 * recording], axis=1), 8000, 44100, "VHQ")
    wav = write_wav(tmp_path / "digits-44k-stereo.wav", np.clip(stereo, -1, 1), rate=44100)
    bundle = exported_dir("speech") / "speech-tflite-fp32"

    clips = _run(["predict", bundle, *files, "--json"], timeout=300)
    assert clips.returncode == 0, clips.stderr[-2000:]
    predicted = [row["label"] for row in json.loads(clips.stdout)["predictions"]]
    clip_accuracy = float(np.mean([p == f.name.split("_")[0] for p, f in zip(predicted, files)]))

    heard = _run(["listen", bundle, wav, "--json"], timeout=300)
    assert heard.returncode == 0, heard.stderr[-2000:]
    words = [json.loads(line) for line in heard.stdout.splitlines()]
    assert all(set(w) == {"start", "end", "label", "confidence"} for w in words)
    accuracy, inserted = _per_digit_accuracy(words, truth)
    print(f"{SPEAKER} takes 0-4: clip-by-clip accuracy {clip_accuracy:.2f}, listen per-digit accuracy "
          f"{accuracy:.2f}, {len(words)} words detected for {len(truth)} spoken, {inserted} inserted")
    assert abs(len(words) - len(truth)) <= 3 and inserted <= 3
    # The quick model's gap on george varies with training: measured (tests/training_spread.py, seeds 0-4,
    # oneDNN on and off) from 4 points above to 10 below clip-by-clip; 6 below on another CPU. 0.15: the
    # worst with margin (issue 24 tracks bringing it within 5 points, held-out speakers included).
    assert accuracy >= clip_accuracy - 0.15


def _peak_rss_mb(args, chunks: list[bytes], repeat: int) -> tuple[float, int, str]:
    """Run `args` with `chunks` (repeated) written to its stdin: (its peak RSS, stdout lines, stderr)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", NO_TF_PEAK, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def feed():
        try:
            for _ in range(repeat):
                for chunk in chunks:
                    proc.stdin.write(chunk)
        finally:
            proc.stdin.close()

    out = {}
    threads = [threading.Thread(target=feed)] + [
        threading.Thread(target=lambda s=s: out.__setitem__(s, getattr(proc, s).read())) for s in ("stdout", "stderr")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    proc.wait(timeout=60)
    stdout, stderr = out["stdout"], out["stderr"]
    assert proc.returncode == 0, stderr[-2000:]
    lines = stderr.decode().splitlines()
    peak_kb = int(next(line.split()[1] for line in lines if line.startswith("VmHWM")))
    return peak_kb / 1024, len(stdout.splitlines()), "\n".join(line for line in lines if not line.startswith("VmHWM"))


def test_memory_does_not_grow_with_the_stream(fsdd, exported_dir):
    """Raw S16_LE mono at 16 kHz on stdin, as `arecord -f S16_LE -r 16000 -c 1 |` gives it: a 60-second
    and a 10-minute stream (the 60 s repeated ten times)."""
    from edgekit.runtime.preprocess.resample import resample

    recording, truth, _ = _recording(fsdd)
    minute = np.zeros(60 * 16000)
    body = resample(recording, 8000, 16000)[:minute.size]
    minute[:body.size] = body
    minute[body.size:] = np.random.default_rng(2).normal(0, 10 ** (NOISE_DBFS / 20), minute.size - body.size)
    pcm = (np.clip(minute, -1, 1) * 32767).astype("<i2").tobytes()
    chunks = [pcm[i:i + 32000] for i in range(0, len(pcm), 32000)]
    bundle = exported_dir("speech") / "speech-tflite-fp32"
    args = ["listen", bundle, "-", "--rate", "16000"]
    one_minute, words_1, stderr = _peak_rss_mb(args, chunks, 1)
    ten_minutes, words_10, _ = _peak_rss_mb(args, chunks, 10)
    print(f"peak RSS: 60 s stream {one_minute:.1f} MB, 10 min stream {ten_minutes:.1f} MB; "
          f"words {words_1} and {words_10}")
    assert "XNNPACK" not in stderr and "INFO" not in stderr
    assert words_1 >= len(truth) - 3 and abs(words_10 - 10 * words_1) <= 10, (words_1, words_10)
    assert ten_minutes < 1.10 * one_minute


def test_backend_banners_only_with_verbose(fsdd, exported_dir):
    bundle = exported_dir("speech") / "speech-tflite-fp32"
    clip = sorted(fsdd.glob("*.wav"))[0]
    quiet = _run(["predict", bundle, clip], timeout=120)
    loud = _run(["predict", bundle, clip, "--verbose"], timeout=120)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stderr == ""
    assert "XNNPACK delegate" in loud.stderr


def test_edgekit_listen_and_the_python_api(fsdd, exported_dir, capsys):
    from edgekit import runtime
    from edgekit.cli import main

    bundle = exported_dir("speech") / "speech-tflite-int8"
    recording, truth, _ = _recording(fsdd, takes=range(1))
    with runtime.load(bundle) as model:
        blocks = (recording[i:i + 1000] for i in range(0, recording.size, 1000))
        words = list(model.listen(blocks, rate=8000))
    assert all(isinstance(w, Detection) for w in words) and abs(len(words) - len(truth)) <= 2
    clip = sorted(fsdd.glob("*.wav"))[0]
    assert main(["listen", str(bundle), str(clip), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in model.labels
    assert main(["listen", str(bundle), str(clip), "--rate", "16000"]) == 2
    assert "sampled at 8000 Hz" in capsys.readouterr().err
