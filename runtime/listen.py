"""Continuous listening: a per-frame speech bundle run over a recording or a live stream of any length.

    with runtime.load("bundles/speech-tflite-fp32") as model:
        for word in model.listen("long-recording.wav"):           # or an iterable of sample blocks
            print(word.start, word.end, word.label, word.confidence)

Pipeline, block by block, with memory that does not depend on the stream's length:
  samples at the input rate -> `Resampler` to the model's rate -> `FeatureStream` (the same STFT
  frames, hop and standardisation as one pass over the whole recording) -> frame probabilities ->
  `WordDetector` -> one `Detection` per word, as soon as the pause after it is heard.

Frame probabilities: the bundles hold an LSTM (return_sequences) + per-frame softmax, batch 1 with a
fixed number of frames T. Where the backend carries the LSTM's state (the fused TFLite LSTM keeps it
in variable tensors), the stream goes through in chunks of T frames, each chunk starting from the
state the previous one ended with: the frame outputs are those of one pass over the whole stream
(tests/test_listen.py checks them against the Keras model run on the full sequence). Where it cannot
(ONNX: the exported graph starts every run from a zero state), windows of T frames overlap by half:
every frame gets at least T/2 frames (about half a second) of context, and its output is close to,
but not the same as, one pass. The state belongs to the `Listener`, so one model can serve several
listeners and predict calls at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.preprocess.audio import FeatureStream
from edgekit.runtime.preprocess.resample import Resampler
from edgekit.runtime.preprocess.wav import WavReader

# Word detection (frames are frame_step apart: 16 ms for the 8 kHz FSDD models).
SPEECH_PROBABILITY = 0.5   # a frame is speech when P(silence) < 0.5
MAX_GAP_S = 0.08           # shorter pauses inside a word do not split it
MIN_WORD_S = 0.08          # shorter speech runs are dropped as clicks
READ_BLOCK_S = 0.25        # seconds of input read per block from a file or stdin


@dataclass(frozen=True)
class Detection:
    start: float       # seconds from the start of the stream
    end: float
    label: str
    confidence: float  # share of the word's non-silence probability that went to `label`

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
                "confidence": round(self.confidence, 4)}


class WordDetector:
    """Frame probabilities [n, C] -> words: runs of speech frames (P(silence) below
    SPEECH_PROBABILITY), bridged across pauses up to MAX_GAP_S, at least MIN_WORD_S long, labelled by
    the utterance rule of one-shot predict (sum each class's probability over the word's frames,
    drop silence, renormalise, argmax)."""

    def __init__(self, labels: list[str], params: dict) -> None:
        self.labels = labels
        self.silence = int(params.get("silence_index", 0))
        rate, self.step, self.length = params["sample_rate"], params["frame_step"], params["frame_length"]
        self.seconds_per_frame = self.step / rate
        self.rate = rate
        self.max_gap = max(0, int(round(MAX_GAP_S / self.seconds_per_frame)))
        self.min_frames = max(1, int(round(MIN_WORD_S / self.seconds_per_frame)))
        self.frame = 0           # index of the next frame
        self._word = None        # [first frame, last speech frame, summed probabilities, speech frames]

    def push(self, probs: np.ndarray) -> list[Detection]:
        found = []
        for row in np.asarray(probs, dtype=np.float64):
            if row[self.silence] < SPEECH_PROBABILITY:
                if self._word is None:
                    self._word = [self.frame, self.frame, np.zeros_like(row), 0]
                self._word[1] = self.frame
                self._word[2] += row
                self._word[3] += 1
            elif self._word is not None and self.frame - self._word[1] > self.max_gap:
                found += self._close()
            self.frame += 1
        return found

    def flush(self) -> list[Detection]:
        return self._close() if self._word is not None else []

    def _close(self) -> list[Detection]:
        first, last, summed, count = self._word
        self._word = None
        if count < self.min_frames:
            return []
        summed = summed.copy()
        summed[self.silence] = 0.0
        index = int(np.argmax(summed))
        return [Detection(start=first * self.step / self.rate, end=(last * self.step + self.length) / self.rate,
                          label=self.labels[index], confidence=float(summed[index] / summed.sum()))]


class _CarriedState:
    """Chunks of T frames through a TFLite runner, the LSTM state carried from chunk to chunk."""

    def __init__(self, model, frames: int) -> None:
        self.model, self.frames = model, frames
        self.state = model.runner.initial_state()

    def run(self, features: np.ndarray) -> np.ndarray:
        """features [T, F] -> probabilities [T, C]."""
        outputs, self.state = self.model.runner.run_with_state(self.model.prepare(features[None]), self.state)
        return self.model._from_model_output(outputs[0], self.model._output)[0]


class Listener:
    """Streams audio through a per-frame speech model. `push(samples)` takes the next block (float in
    [-1, 1] or int16, mono, at `rate` Hz) and returns the words completed so far; `flush()` ends the
    stream and returns the rest. `frames(samples)` gives the frame probabilities instead."""

    def __init__(self, model, rate: int | None = None) -> None:
        params = model.bundle.preprocessing
        if model.bundle.task != "speech" or not params or params.get("type") != "speech":
            raise InvalidInputError(f"listen needs a speech bundle (a per-frame model over audio); "
                                    f"{model.bundle.path} is a {model.bundle.task or 'bare'} model")
        self.model, self.params = model, params
        self.rate = int(rate or params["sample_rate"])
        self.frames_per_run = int(params["num_frames"])
        self.resampler = Resampler(self.rate, params["sample_rate"])
        self.features = FeatureStream(params)
        self.detector = WordDetector(model.labels, params)
        runner = model.runner
        self.carries_state = bool(getattr(runner, "carries_state", False))
        self._pending = np.zeros((0, self.features.num_features), np.float32)
        if self.carries_state:
            self._chunks = _CarriedState(model, self.frames_per_run)
        else:
            self.hop = max(1, self.frames_per_run // 2)
            self._window = np.zeros((0, self.features.num_features), np.float32)  # last T frames run
        self._ended = False

    # -- frames ----------------------------------------------------------------------------------
    def frames(self, samples) -> np.ndarray:
        """The next block of samples -> probabilities [n, C] of the frames it completes."""
        if self._ended:
            raise InvalidInputError("this stream has ended (flush was called); start a new Listener")
        samples = _as_float(samples)
        return self._run(self.features.push(self.resampler.process(samples)), final=False)

    def flush_frames(self) -> np.ndarray:
        """End the stream: probabilities of the frames still pending (the last chunk is padded)."""
        self._ended = True
        tail = self.resampler.flush()
        return self._run(self.features.push(tail), final=True)

    def _run(self, features: np.ndarray, final: bool) -> np.ndarray:
        self._pending = np.concatenate([self._pending, features])
        T = self.frames_per_run
        out = []
        if self.carries_state:
            while len(self._pending) >= T or (final and len(self._pending)):
                chunk, real = self._pending[:T], min(T, len(self._pending))
                if real < T:  # the model is causal: zero padding after the end changes nothing before it
                    chunk = np.concatenate([chunk, np.zeros((T - real, chunk.shape[1]), np.float32)])
                out.append(self._chunks.run(chunk)[:real])
                self._pending = self._pending[real:]
        else:
            out += self._run_windows(final)
        return np.concatenate(out) if out else np.zeros((0, len(self.model.labels)), np.float32)

    def _run_windows(self, final: bool) -> list[np.ndarray]:
        """Overlapping windows: the first T frames come from one window, then each window advances by
        `hop` frames and contributes its last `hop` outputs (the rest of it is context)."""
        T, out = self.frames_per_run, []
        while True:
            first = len(self._window) == 0
            need = T if first else self.hop
            if len(self._pending) < need and not (final and len(self._pending)):
                return out
            take = min(need, len(self._pending))
            window = np.concatenate([self._window, self._pending[:take]])[-T:]
            self._pending = self._pending[take:]
            real = len(window)
            if real < T:  # only at the very end of a stream shorter than T frames
                window = np.concatenate([window, np.zeros((T - real, window.shape[1]), np.float32)])
            probs = self.model.predict_tensors(window[None])[0][:real]
            out.append(probs if first else probs[-take:])
            self._window = window[:real]

    # -- words -----------------------------------------------------------------------------------
    def push(self, samples) -> list[Detection]:
        return self.detector.push(self.frames(samples))

    def flush(self) -> list[Detection]:
        return self.detector.push(self.flush_frames()) + self.detector.flush()


def _as_float(samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InvalidInputError(f"audio blocks must be 1-D mono arrays, got shape {tuple(samples.shape)}")
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    if samples.dtype.kind != "f":
        raise InvalidInputError(f"audio blocks must be float in [-1, 1] or int16, got {samples.dtype}")
    samples = samples.astype(np.float64)
    if samples.size and not np.isfinite(samples).all():
        raise InvalidInputError("audio block contains NaN or infinity")
    return np.clip(samples, -1.0, 1.0)


def listen(model, source, rate: int | None = None) -> Iterator[Detection]:
    """Words in `source`: a WAV path (read block by block at its own rate; `rate` must be None or
    match it), a WavReader, or an iterable of sample blocks at `rate` Hz (default: the model's)."""
    if isinstance(source, (str, os.PathLike)):
        with WavReader(Path(source)) as wav:
            yield from listen(model, wav, rate)
        return
    if isinstance(source, WavReader):
        if rate is not None and rate != source.rate:
            raise InvalidInputError(f"{source.name} is sampled at {source.rate} Hz but the rate given is "
                                    f"{rate} Hz (the rate applies to raw PCM streams)")
        rate, source = source.rate, source.blocks(max(1, int(source.rate * READ_BLOCK_S)))
    listener = Listener(model, rate)
    blocks: Iterable = source
    for block in blocks:
        yield from listener.push(block)
    yield from listener.flush()


def raw_pcm_blocks(stream, rate: int) -> Iterator[np.ndarray]:
    """Raw S16_LE mono PCM from a binary stream (e.g. stdin) -> int16 blocks of READ_BLOCK_S."""
    size = max(2, 2 * int(rate * READ_BLOCK_S))
    leftover = b""
    while True:
        data = stream.read(size)
        if not data:
            return
        data = leftover + data
        usable = len(data) - len(data) % 2
        leftover = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], "<i2")


# -- command line ---------------------------------------------------------------------------------

def add_listen_arguments(p) -> None:
    """The flags of `python -m edgekit.runtime listen` and `edgekit listen`."""
    from edgekit.runtime.cli import BACKEND_CHOICES, positive_int

    p.add_argument("bundle", metavar="BUNDLE", help="a speech bundle (per-frame model)")
    p.add_argument("source", metavar="FILE.wav|-",
                   help="a WAV file, or - for stdin: raw S16_LE mono PCM at --rate (or a WAV stream)")
    p.add_argument("--rate", type=positive_int,
                   help="sample rate of a raw PCM stream on stdin (default 16000); a WAV header's rate wins")
    p.add_argument("--json", action="store_true", help="one JSON object per word: start, end, label, confidence")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--device", help="device profile name or .json file supplying defaults")
    p.add_argument("--verbose", action="store_true", help="show the inference backend's own log lines")


DEFAULT_STREAM_RATE = 16000


def listen_command(args) -> int:
    import json
    import sys

    from edgekit.runtime.cli import _load, _out

    with _load(args) as model:
        if args.source == "-":
            stdin = sys.stdin.buffer
            head = _read_head(stdin)
            if head[:4] == b"RIFF":
                wav = WavReader(_Prefixed(head, stdin), name="stdin")
                source, rate = wav, args.rate
            else:
                rate = args.rate or DEFAULT_STREAM_RATE
                source = raw_pcm_blocks(_Prefixed(head, stdin), rate)
        else:
            source, rate = Path(args.source), args.rate
        for word in listen(model, source, rate):
            if args.json:
                _out(json.dumps(word.to_dict()))
            else:
                _out(f"{word.start:9.2f} {word.end:9.2f}  {word.label}  {word.confidence:.3f}")
    return 0


def _read_head(stream, count: int = 4) -> bytes:
    data = b""
    while len(data) < count:
        part = stream.read(count - len(data))
        if not part:
            break
        data += part
    return data


class _Prefixed:
    """A binary stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, stream) -> None:
        self.head, self.stream, self.name = head, stream, "stdin"

    def read(self, count: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(count)
        if count < 0:
            data, self.head = self.head + self.stream.read(), b""
        else:
            data, self.head = self.head[:count], self.head[count:]
        return data
