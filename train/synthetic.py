"""Embedded default data, generated on the fly (no download): learnable, deterministic from the
seed, and always marked synthetic in edgekit.json and the log.

- text: template sentences about three topics (weather, food, sport);
- image: drawn shapes (circle, square, triangle, stripes) over colour gradients with noise;
- speech: tone patterns at 8 kHz (low tone, high tone, rising chirp, falling chirp) with noise.
"""

from __future__ import annotations

import numpy as np

from edgekit.core import log
from edgekit.train.data import Dataset, make_dataset

SOURCE = "embedded"

_TEXT_TOPICS = {
    "weather": (["the forecast says", "today it looks like", "expect", "we had", "tomorrow brings"],
                ["heavy rain", "sunshine", "a cold wind", "snow showers", "thunderstorms",
                 "a warm breeze", "thick fog", "clear skies"],
                ["in the north", "all afternoon", "this weekend", "near the coast", "after lunch"]),
    "food": (["i cooked", "we ordered", "she baked", "try the", "they served"],
             ["spicy noodles", "a chocolate cake", "fresh bread", "grilled fish", "vegetable soup",
              "a cheese pizza", "sweet pancakes", "rice and beans"],
             ["for dinner", "with garlic", "at the cafe", "for the kids", "last night"]),
    "sport": (["the team won", "he scored", "we watched", "she trained for", "they lost"],
              ["the football match", "a tennis final", "the cycling race", "two goals",
               "the marathon", "a basketball game", "the swimming relay", "the cup"],
              ["in extra time", "at the stadium", "on saturday", "against the champions",
               "by one point"]),
}


def text(seed: int, per_class: int = 300) -> Dataset:
    rng = np.random.default_rng(seed)
    texts, names = [], []
    for topic, (starts, middles, ends) in _TEXT_TOPICS.items():
        for _ in range(per_class):
            words = [rng.choice(starts), rng.choice(middles)]
            if rng.random() < 0.7:
                words.append(rng.choice(ends))
            sentence = " ".join(words)
            texts.append(sentence.capitalize() + rng.choice([".", "!", "", "?"]))
            names.append(topic)
    log(f"using embedded SYNTHETIC text data: {len(texts)} template sentences about "
        f"{', '.join(_TEXT_TOPICS)} (pass --data for real data)")
    return make_dataset(texts, names, SOURCE, seed, synthetic=True)


IMAGE_CLASSES = ("circle", "square", "triangle", "stripes")


def _draw(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    # Dark gradient background, bright shape: the class is the outline, never the colour.
    background = rng.uniform(0, 90, 3) + rng.uniform(-30, 30, 3) * gradient[..., None]
    colour = rng.uniform(150, 255, 3)
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.25, size * 0.36)
    if kind == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif kind == "square":
        mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    elif kind == "triangle":
        mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
    else:
        period = rng.uniform(4, 8)
        mask = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period) > 0
    image = np.where(mask[..., None], colour, background) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def images(seed: int, per_class: int = 300, size: int = 32) -> Dataset:
    rng = np.random.default_rng(seed)
    samples, names = [], []
    for kind in IMAGE_CLASSES:
        for _ in range(per_class):
            samples.append(_draw(kind, rng, size))
            names.append(kind)
    log(f"using embedded SYNTHETIC image data: {len(samples)} drawn {size}x{size} shapes "
        f"({', '.join(IMAGE_CLASSES)}) (pass --data for real photos)")
    return make_dataset(samples, names, SOURCE, seed, synthetic=True)


SPEECH_CLASSES = ("low_tone", "high_tone", "rising_chirp", "falling_chirp")
SAMPLE_RATE = 8000


def _tone(kind: str, rng: np.random.Generator) -> np.ndarray:
    duration = rng.uniform(0.3, 0.6)
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    low, high = rng.uniform(250, 450), rng.uniform(1500, 2500)
    start, end = {"low_tone": (low, low), "high_tone": (high, high),
                  "rising_chirp": (low, high), "falling_chirp": (high, low)}[kind]
    phase = 2 * np.pi * (start * t + (end - start) * t ** 2 / (2 * duration))
    envelope = np.minimum(1.0, np.minimum(t, duration - t) / 0.03)  # 30 ms fade in/out
    tone = rng.uniform(0.2, 0.6) * envelope * np.sin(phase)
    clip = np.zeros(int(rng.uniform(0.7, 1.0) * SAMPLE_RATE))
    onset = int(rng.uniform(0, len(clip) - len(tone)))
    clip[onset:onset + len(tone)] = tone
    clip += rng.normal(0, 0.005, len(clip))
    return np.round(np.clip(clip, -1, 1) * 32767) / 32768.0  # as read from a 16-bit WAV


def speech(seed: int, per_class: int = 120) -> Dataset:
    rng = np.random.default_rng(seed)
    clips, names = [], []
    for kind in SPEECH_CLASSES:
        for _ in range(per_class):
            clips.append(_tone(kind, rng))
            names.append(kind)
    log(f"using embedded SYNTHETIC speech data: {len(clips)} tone clips at {SAMPLE_RATE} Hz "
        f"({', '.join(SPEECH_CLASSES)}) (pass --data for real recordings)")
    dataset = make_dataset(clips, names, SOURCE, seed, synthetic=True)
    dataset.extra["sample_rate"] = SAMPLE_RATE
    return dataset
