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
state the previous one ended with, so the frame outputs are those of one pass over the whole stream
(tests/test_listen.py checks them against the Keras model run on the full sequence) - except at word
onsets, where the state is reset. Where it cannot (ONNX: the exported graph starts every run from a
zero state), windows of T frames overlap by half: every frame gets at least T/2 frames (about half a
second) of context, and its output is close to, but not the same as, one pass. The state belongs to
the `Listener`, so one model can serve several listeners and predict calls at once.

State resets at word onsets: the model was trained on isolated, tightly trimmed clips, each run from
a zero state, and labels a word that it hears from the state a pause left 12-20 points less accurately
than one-shot predict. So when its frames say speech after at least ONSET_PAUSE_S of silence, the
word's first frame is found by walking back from that onset while frames differ in loudness from the
pause, and the stream is run again from there with a zero state: one extra invoke per word, and a
ring buffer of ONSET_LOOKBACK_S of features. `Listener(..., reset_at_onsets=False)` gives one pass.

Background noise: the model learnt silence from digital zeros (clips padded to one second) and, in a
microphone's noise, may keep hearing the last word; frames less than SPEECH_ABOVE_NOISE_DB above the
noise floor (a low percentile of the last NOISE_WINDOW_S of frame loudness) count as silence.
Measured on takes 0-4 of the five FSDD speakers (50 digits each, 0.4-1 s pauses of -60 dBFS noise),
quick test model: listen is 0-10 points (3.2 on average) below clip-by-clip predict, from 12-20
without the resets and the noise floor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
LABEL_TAIL_S = 0.08        # after the pause that ends a word, this much more counts toward its label
READ_BLOCK_S = 0.25        # seconds of input read per block from a file or stdin
# Background noise (see above): frames within SPEECH_ABOVE_NOISE_DB of the noise floor are silence,
# once NOISE_WINDOW_S / 3 of the stream has been heard.
NOISE_WINDOW_S = 3.0
NOISE_PERCENTILE = 10
SPEECH_ABOVE_NOISE_DB = 6.0
# State resets (carried-state backends): the model was trained on isolated clips, each from a zero
# LSTM state, so a word after a pause is run from a zero state too (see Listener).
ONSET_PAUSE_S = 0.15       # silence frames in a row before a speech frame that make it an onset
ONSET_LOOKBACK_S = 0.3     # how far before the model's onset the word's first frame is looked for
ONSET_CHANGE_DB = 2.0      # a frame this much louder or quieter than the pause belongs to the word
ONSET_LEAD_FRAMES = 0      # frames before the word's first frame also run from the zero state


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
    SPEECH_PROBABILITY and not marked quiet), bridged across pauses up to MAX_GAP_S, at least
    MIN_WORD_S long, labelled by the utterance rule of one-shot predict (sum each class's probability
    over the frames, drop silence, renormalise, argmax) over every frame from the word's first speech
    frame to MAX_GAP_S + LABEL_TAIL_S after its last: one-shot predict sums a whole clip, the frames
    after the word included, and labelling only the speech frames measured 0 to 8 points lower (3.6
    on average over five speakers). A speech frame in that tail starts the next word."""

    def __init__(self, labels: list[str], params: dict) -> None:
        self.labels = labels
        self.silence = int(params.get("silence_index", 0))
        rate, self.step, self.length = params["sample_rate"], params["frame_step"], params["frame_length"]
        self.seconds_per_frame = self.step / rate
        self.rate = rate
        self.max_gap = max(0, int(round(MAX_GAP_S / self.seconds_per_frame)))
        self.min_frames = max(1, int(round(MIN_WORD_S / self.seconds_per_frame)))
        self.tail = max(0, int(round(LABEL_TAIL_S / self.seconds_per_frame)))
        self.frame = 0           # index of the next frame
        self._word = None        # [first frame, last speech frame, summed probabilities, speech frames]

    def push(self, probs: np.ndarray, quiet: np.ndarray | None = None) -> list[Detection]:
        """Frame probabilities [n, C] (and optionally which of the frames are too quiet to be
        speech, whatever the model says) -> the words they complete."""
        probs = np.asarray(probs, dtype=np.float64)
        quiet = np.zeros(len(probs), bool) if quiet is None else quiet
        found = []
        for row, hushed in zip(probs, quiet):
            speech = row[self.silence] < SPEECH_PROBABILITY and not hushed
            if self._word is not None:
                since = self.frame - self._word[1]
                if since > self.max_gap + self.tail or (speech and since > self.max_gap):
                    found += self._close()
            if speech:
                if self._word is None:
                    self._word = [self.frame, self.frame, np.zeros_like(row), 0]
                self._word[1] = self.frame
                self._word[3] += 1
            if self._word is not None:
                self._word[2] += row
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
    """Chunks of T frames through a TFLite runner, the LSTM state carried from chunk to chunk.
    `run` does not commit the state after the chunk: the caller keeps it (`commit`) or, at a word
    onset, starts the next chunk from zeros (`reset`)."""

    def __init__(self, model) -> None:
        self.model = model
        self.zero = [s.copy() for s in model.runner.initial_state()]
        self.state, self._after = self.zero, None

    def run(self, features: np.ndarray) -> np.ndarray:
        """features [T, F] -> probabilities [T, C]."""
        outputs, self._after = self.model.runner.run_with_state(self.model.prepare(features[None]), self.state)
        return self.model._from_model_output(outputs[0], self.model._output)[0]

    def commit(self) -> None:
        self.state = self._after

    def reset(self) -> None:
        self.state = [s.copy() for s in self.zero]


class OnsetFinder:
    """Word onsets in the model's own frame outputs: the first speech frame (P(silence) below
    SPEECH_PROBABILITY) after at least ONSET_PAUSE_S of silence frames. The stream starts in a pause."""

    def __init__(self, params: dict) -> None:
        self.silence = int(params.get("silence_index", 0))
        self.min_pause = max(1, int(round(ONSET_PAUSE_S * params["sample_rate"] / params["frame_step"])))
        self.pause = self.min_pause  # silence frames seen in a row

    def scan(self, probs: np.ndarray, quiet: np.ndarray, first: int = 0) -> int | None:
        """The index in `probs` of the first onset from `first` on, or None (`quiet`: frames at the
        noise floor, silence whatever the model says); the count covers the frames up to it (the
        frames after an onset are scanned again, as the re-run gives them)."""
        silent = (probs[:, self.silence] >= SPEECH_PROBABILITY) | quiet
        for i, quiet in enumerate(silent[first:], start=first):
            if quiet:
                self.pause += 1
            elif self.pause >= self.min_pause:
                self.pause = 0
                return i
            else:
                self.pause = 0
        return None


class Listener:
    """Streams audio through a per-frame speech model. `push(samples)` takes the next block (float in
    [-1, 1] or int16, mono, at `rate` Hz) and returns the words completed so far; `flush()` ends the
    stream and returns the rest. `frames(samples)` gives the frame probabilities instead."""

    def __init__(self, model, rate: int | None = None, reset_at_onsets: bool = True) -> None:
        params = model.bundle.preprocessing
        if not model.kind.streams or not params or params.get("type") != model.kind.name:
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
        self.resets = 0          # state resets at word onsets so far
        self._mean, self._std = np.asarray(params["mean"]), np.asarray(params["std"])
        self._noise_window = max(1, int(round(NOISE_WINDOW_S * params["sample_rate"] / params["frame_step"])))
        self._recent_loudness = np.zeros(0)  # of the last NOISE_WINDOW_S of frames (the noise floor)
        self._unheard_loudness = np.zeros(0)  # of the frames received whose outputs are not given yet
        self._noise_floor = -np.inf
        self.last_quiet = np.zeros(0, bool)  # which frames of the last `frames` call are at the noise floor
        if self.carries_state:
            self.reset_at_onsets = reset_at_onsets
            self._chunks, self._onsets = _CarriedState(model), OnsetFinder(params)
            self._skip = 0       # leading outputs of the next run already given (a re-run's lead-in)
            self._lookback = max(1, int(round(ONSET_LOOKBACK_S * params["sample_rate"] / params["frame_step"])))
            self._recent = np.zeros((0, self.features.num_features), np.float32)  # last frames run
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
        loudness = self._loudness_db(features)
        self._recent_loudness = np.concatenate([self._recent_loudness, loudness])[-self._noise_window:]
        if len(self._recent_loudness) >= self._noise_window // 3:  # a floor from at least a second
            self._noise_floor = float(np.percentile(self._recent_loudness, NOISE_PERCENTILE))
        self._unheard_loudness = np.concatenate([self._unheard_loudness, loudness])
        probs = self._run_model(features, final)
        # every frame's output is given once, in order: the first len(probs) unheard frames
        self.last_quiet = self._unheard_loudness[:len(probs)] < self._noise_floor + SPEECH_ABOVE_NOISE_DB
        self._unheard_loudness = self._unheard_loudness[len(probs):]
        return probs

    def _is_quiet(self, features: np.ndarray) -> np.ndarray:
        return self._loudness_db(features) < self._noise_floor + SPEECH_ABOVE_NOISE_DB

    def _run_model(self, features: np.ndarray, final: bool) -> np.ndarray:
        self._pending = np.concatenate([self._pending, features])
        T = self.frames_per_run
        out = []
        if self.carries_state:
            while len(self._pending) >= T or (final and len(self._pending)):
                chunk, real = self._pending[:T], min(T, len(self._pending))
                if real < T:  # the model is causal: zero padding after the end changes nothing before it
                    chunk = np.concatenate([chunk, np.zeros((T - real, chunk.shape[1]), np.float32)])
                probs = self._chunks.run(chunk)[self._skip:real]
                onset, back = None, None
                while self.reset_at_onsets and back is None:
                    onset = self._onsets.scan(probs, self._is_quiet(self._pending[self._skip:real]),
                                              0 if onset is None else onset + 1)
                    if onset is None:
                        break
                    back = self._word_start(self._skip + onset)
                if onset is None:
                    out.append(probs)
                    self._chunks.commit()
                    self._keep_recent(self._pending[self._skip:real])
                    self._pending, self._skip = self._pending[real:], 0
                    continue
                # The model hears a word from frame `onset` of this run on, a few frames after it
                # starts: keep the outputs before the onset, and run the word again from a zero state,
                # from its first frame, `back` frames earlier; the re-run's outputs of those frames
                # are dropped (they were given already).
                done = self._skip + onset
                out.append(probs[:onset])
                self._keep_recent(self._pending[self._skip:done])
                lead = self._recent[len(self._recent) - back:]
                self._pending, self._skip = np.concatenate([lead, self._pending[done:]]), len(lead)
                self._chunks.reset()
                self.resets += 1
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

    def _keep_recent(self, frames: np.ndarray) -> None:
        self._recent = np.concatenate([self._recent, frames])[-self._lookback:]

    def _word_start(self, onset: int) -> int | None:
        """How many frames before `self._pending[onset]` (where the model first hears a word) the
        word starts: walking back over the recent frames while they differ in loudness from the
        pause (their median) by more than ONSET_CHANGE_DB (quieter counts too: a take may start with
        a fade below the room's noise), then ONSET_LEAD_FRAMES more. None when the onset frame and
        the one before it do not stand out from the pause: speech heard in noise, not a word."""
        frames = np.concatenate([self._recent, self._pending[self._skip:onset + 1]])[-(self._lookback + 1):]
        if len(frames) < 3:
            return 0
        loudness = self._loudness_db(frames)
        changed = np.abs(loudness - np.median(loudness)) > ONSET_CHANGE_DB
        if not changed[-2:].any():
            return None
        back = 0
        while back < len(frames) - 1 and changed[-2 - back]:
            back += 1
        return min(len(frames) - 1, back + ONSET_LEAD_FRAMES)

    def _loudness_db(self, features: np.ndarray) -> np.ndarray:
        """Frame loudness in dB (of the STFT magnitude) from standardised features: the mean log-mel
        value (for MFCCs: c0, which is that mean times sqrt(2 * mel bins))."""
        raw = features * self._std + self._mean
        mean_log = raw[:, 0] / np.sqrt(2 * self.params["num_mel_bins"]) if self.params.get("features") == "mfcc" \
            else raw.mean(axis=1)
        return 20 / np.log(10) * mean_log

    # -- words -----------------------------------------------------------------------------------
    def push(self, samples) -> list[Detection]:
        probs = self.frames(samples)
        return self.detector.push(probs, self.last_quiet)

    def flush(self) -> list[Detection]:
        probs = self.flush_frames()
        return self.detector.push(probs, self.last_quiet) + self.detector.flush()


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
    for block in source:
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
    from edgekit.runtime.commandline import BACKEND_CHOICES, positive_int

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

    from edgekit.runtime.commandline import load_bundle as _load
    from edgekit.runtime.commandline import out as _out

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
