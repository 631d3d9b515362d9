"""Loaders for user data (text tables, image folders, WAV folders) and deterministic splits.

Every loader returns a `Dataset`: raw samples + integer labels per split, the class names, and a
summary (source, counts, skipped files with reasons) that goes into edgekit.json `data`.
Problems the user must fix raise UserError; unreadable single files are skipped, counted and
reported, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core import UserError, first_line, log
from edgekit.runtime.preprocess.image import read_image_file
from edgekit.runtime.preprocess.wav import read_wav

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)$")
FSDD_TEST_TAKES = range(0, 5)  # the dataset's own convention: takes 0-4 = test, 5-49 = train


@dataclass
class Dataset:
    labels: list[str]                              # class names, index = class id
    splits: dict[str, tuple[list, np.ndarray]]     # "train"/"val"/"test" -> (samples, int labels)
    source: str
    synthetic: bool = False
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        train_y = self.splits["train"][1]
        return {
            "source": self.source,
            "synthetic": self.synthetic,
            **{name: len(self.splits[name][1]) for name in ("train", "val", "test")},
            "skipped": int(sum(self.skipped.values())),
            "skipped_reasons": dict(self.skipped),
            "class_counts": {self.labels[i]: int(n) for i, n in
                             zip(*np.unique(train_y, return_counts=True))},
            **self.extra,
        }


def make_dataset(samples: list, names: list[str], source: str, seed: int, *,
                 test: tuple[list, list[str]] | None = None, test_fraction: float = 0.15,
                 val_fraction: float = 0.1, max_samples: int | None = None,
                 skipped: Counter | None = None, synthetic: bool = False) -> Dataset:
    """Integer-encode labels and split deterministically from `seed`.

    With `test` given (the data's own held-out split) only validation is split off the rest."""
    labels = sorted(set(names) | set(test[1] if test else []))
    if len(set(names)) < 2:
        found = labels[0] if labels else "none"
        raise UserError(f"{source}: need at least 2 classes to train a classifier, found 1 ({found})")
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[n] for n in names], dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    if test is None:
        n_test = max(1, int(round(len(order) * test_fraction)))
        test_idx, order = order[:n_test], order[n_test:]
        test_split = ([samples[i] for i in test_idx], y[test_idx])
    else:
        test_split = (list(test[0]), np.array([index[n] for n in test[1]], dtype=np.int64))
    n_val = max(1, int(round(len(order) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if max_samples is not None:
        train_idx = train_idx[:max_samples]
    if len(train_idx) < 2:
        raise UserError(f"{source}: only {len(samples)} samples; too few to split into train, "
                        "validation and test")
    return Dataset(labels, {"train": ([samples[i] for i in train_idx], y[train_idx]),
                            "val": ([samples[i] for i in val_idx], y[val_idx]),
                            "test": test_split},
                   source, synthetic, skipped or Counter())


def report_skips(skipped: Counter, examples: list[str]) -> None:
    if skipped:
        detail = ", ".join(f"{n} {reason}" for reason, n in skipped.items())
        log(f"warning: skipped {sum(skipped.values())} samples ({detail}), e.g. {examples[0]}")


# Text ------------------------------------------------------------------------------------------

def _decode_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x}); "
                        "save the file as UTF-8") from None


def _delimiter(path: Path, first_line: str) -> str:
    if path.suffix.lower() == ".tsv" or "\t" in first_line:
        return "\t"
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;|").delimiter
    except csv.Error:
        return ","


def _guess_columns(rows: list[list[str]]) -> tuple[int, int]:
    """Label column = fewest distinct values (>= 2); text column = longest values among the rest."""
    body = rows[1:] or rows
    width = len(rows[0])
    distinct = [len({r[c] for r in body if c < len(r)}) for c in range(width)]
    mean_len = [np.mean([len(r[c]) for r in body if c < len(r)] or [0]) for c in range(width)]
    label = min((c for c in range(width) if distinct[c] >= 2), key=lambda c: distinct[c],
                default=0)
    text = max((c for c in range(width) if c != label), key=lambda c: mean_len[c])
    return text, label


def read_text_table(path: str | Path, text_column: str | None = None,
                    label_column: str | None = None) -> tuple[list[str], list[str], Counter]:
    """CSV/TSV -> (texts, label names, skipped). A header is used when present (detected)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text data file not found: {path} (expected a CSV or TSV file)")
    content = _decode_utf8(path)
    lines = content.splitlines()
    if not any(line.strip() for line in lines):
        raise UserError(f"{path} is empty")
    delimiter = _delimiter(path, lines[0])
    # TSV has no quoting convention (a field cannot hold a tab): a text that starts with '"' is
    # text, not a quoted field. CSV follows RFC 4180 quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = [r for r in csv.reader(io.StringIO(content, newline=""), delimiter=delimiter,
                                  quoting=quoting) if r]
    if len(rows[0]) < 2:
        raise UserError(f"{path}: found 1 column; expected a text and a label column "
                        f"separated by {'tabs' if delimiter == chr(9) else repr(delimiter)}")
    header = [h.strip() for h in rows[0]]
    if text_column or label_column:
        missing = [c for c in (text_column, label_column) if c and c not in header]
        if missing:
            raise UserError(f"{path}: no column named {', '.join(map(repr, missing))}; "
                            f"columns are: {', '.join(header)}")
        guess_text, guess_label = _guess_columns(rows)
        text_idx = header.index(text_column) if text_column else guess_text
        label_idx = header.index(label_column) if label_column else guess_label
        has_header = True
    else:
        text_idx, label_idx = _guess_columns(rows)
        # A header's label cell is a name that never recurs in the column; class names do recur.
        has_header = sum(1 for r in rows if len(r) > label_idx and r[label_idx] == rows[0][label_idx]) == 1
    texts, names, skipped = [], [], Counter()
    for row in rows[1:] if has_header else rows:
        if len(row) <= max(text_idx, label_idx):
            skipped["rows with missing fields"] += 1
            continue
        text, label = row[text_idx], row[label_idx].strip()
        if not text.strip() or not label:
            skipped["rows with empty text or label"] += 1
            continue
        texts.append(text)
        names.append(label)
    if not texts:
        raise UserError(f"{path}: no usable rows (need a text and a label in each row)")
    return texts, names, skipped


def load_text(path: str | Path, seed: int, text_column=None, label_column=None,
              max_samples=None) -> Dataset:
    texts, names, skipped = read_text_table(path, text_column, label_column)
    report_skips(skipped, [str(path)])
    log(f"loaded {len(texts)} texts in {len(set(names))} classes from {path}")
    return make_dataset(texts, names, str(path), seed, max_samples=max_samples, skipped=skipped)


# Images ----------------------------------------------------------------------------------------

def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decode_image(path: Path) -> np.ndarray:
    """The device's image reader (EXIF orientation, alpha on white, large photos reduced)."""
    return read_image_file(path)


def _read_image_split(folder: Path, skipped: Counter, bad: list[str]) -> tuple[list, list[str]]:
    classes = _class_folders(folder)
    if not classes:
        loose = _image_files(folder)
        what = f"{len(loose)} loose images but no" if loose else "no"
        raise UserError(f"{folder} has {what} class subfolders; expected one folder per class "
                        "(e.g. cats/, dogs/) holding its images")
    images, names = [], []
    for class_dir in classes:
        files = _image_files(class_dir)
        if not files:
            raise UserError(f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            try:
                images.append(decode_image(f))
            except Exception as exc:  # Pillow raises many types for corrupt files
                skipped["unreadable images"] += 1
                bad.append(f"{f}: {first_line(exc)}")
                continue
            names.append(class_dir.name)
    return images, names


def load_images(path: str | Path, seed: int, max_samples=None) -> Dataset:
    """A folder of class folders, or a folder with train/ and test/ folders of class folders."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"image data folder not found: {folder}")
    skipped, bad = Counter(), []
    has_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    images, names = _read_image_split(folder / "train" if has_splits else folder, skipped, bad)
    test = _read_image_split(folder / "test", skipped, bad) if has_splits else None
    if not images:
        raise UserError(f"{folder}: none of the images could be decoded (e.g. {bad[0]})")
    report_skips(skipped, bad)
    log(f"loaded {len(images) + (len(test[0]) if test else 0)} images in {len(set(names))} classes "
        f"from {folder}" + (" (its test/ folder is the held-out test set)" if has_splits else ""))
    if test is not None and set(test[1]) - set(names):
        raise UserError(f"{folder}/test has classes missing from train/: "
                        f"{', '.join(sorted(set(test[1]) - set(names)))}")
    return make_dataset(images, names, str(folder), seed, test=test, max_samples=max_samples,
                        skipped=skipped)


# Speech ----------------------------------------------------------------------------------------

def load_wavs(path: str | Path, seed: int, max_samples=None) -> Dataset:
    """WAV files in class folders, or named {label}_{speaker}_{take}.wav (FSDD: takes 0-4 = test)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"speech data folder not found: {folder}")
    classes = [d for d in _class_folders(folder) if any(d.rglob("*.wav"))]
    if classes:
        entries = [(f, d.name, None) for d in classes for f in sorted(d.rglob("*.wav"))]
    else:
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise UserError(f"{folder} has no .wav files (expected class folders of WAV files or "
                            "files named {label}_{speaker}_{take}.wav)")
        entries = []
        for f in files:
            match = FSDD_NAME.match(f.stem)
            if not match:
                raise UserError(f"{f.name} does not follow {{label}}_{{speaker}}_{{take}}.wav; put "
                                "WAV files in one folder per class instead")
            entries.append((f, match["label"], int(match["take"]) in FSDD_TEST_TAKES))
    skipped, bad, rates = Counter(), [], Counter()
    clips, names, is_test = [], [], []
    for f, label, test_flag in entries:
        try:
            samples, rate = read_wav(f)  # the device's WAV reader: PCM/float, any channels
        except (OSError, ValueError) as exc:
            skipped["unreadable or unsupported WAV files"] += 1
            bad.append(f"{f}: {exc}")
            continue
        rates[rate] += 1
        clips.append(samples)
        names.append(label)
        is_test.append(test_flag)
    if not clips:
        raise UserError(f"{folder}: none of the WAV files could be read (e.g. {bad[0]})")
    if len(rates) > 1:
        listing = ", ".join(f"{n} files at {r} Hz" for r, n in rates.most_common())
        raise UserError(f"{folder}: mixed sample rates ({listing}); resample to one rate")
    report_skips(skipped, bad)
    rate = next(iter(rates))
    log(f"loaded {len(clips)} WAV files ({rate} Hz) in {len(set(names))} classes from {folder}"
        + (" (takes 0-4 are the test split)" if not classes else ""))
    if classes:
        dataset = make_dataset(clips, names, str(folder), seed, max_samples=max_samples,
                               skipped=skipped)
    else:
        train = [(c, n) for c, n, t in zip(clips, names, is_test) if not t]
        test = [(c, n) for c, n, t in zip(clips, names, is_test) if t]
        if not test or not train:
            raise UserError(f"{folder}: FSDD naming needs takes 0-4 (test) and takes >= 5 (train)")
        dataset = make_dataset([c for c, _ in train], [n for _, n in train], str(folder), seed,
                               test=([c for c, _ in test], [n for _, n in test]),
                               max_samples=max_samples, skipped=skipped)
    dataset.extra["sample_rate"] = rate
    return dataset


# Evaluation data (verify --data) -----------------------------------------------------------------

def load_raw(task: str, path: str | Path, text_column: str | None = None,
             label_column: str | None = None) -> tuple[list, list[str]]:
    """Every labelled sample of a user's data, unprocessed: (texts or file paths, label names).

    The model's own preprocessing turns them into inputs, so evaluation sees exactly what the device
    sees. Where the data names a test split, only that split is evaluated (training samples would
    inflate the accuracy): an image folder with test/ is evaluated on test/, FSDD-named WAVs on takes
    0-4. The log says which samples were evaluated."""
    path = Path(path)
    if task == "text":
        texts, names, skipped = read_text_table(path, text_column, label_column)
        report_skips(skipped, [str(path)])
        log(f"evaluating all {len(texts)} rows of {path} (a table names no test split)")
        return texts, names
    if not path.is_dir():
        raise UserError(f"{task} data folder not found: {path}")
    if task == "image":
        folder = path / "test" if (path / "test").is_dir() else path
        files = [(f, d.name) for d in _class_folders(folder) for f in _image_files(d)]
        which = f"the test split {folder}" if folder != path else f"every image in {path} (no test/ folder)"
    elif task == "speech":
        classes = [d for d in _class_folders(path) if any(d.rglob("*.wav"))]
        if classes:
            files = [(f, d.name) for d in classes for f in sorted(d.rglob("*.wav"))]
            which = f"every WAV in the class folders of {path}"
        else:
            named = [(f, m) for f in sorted(path.glob("*.wav")) if (m := FSDD_NAME.match(f.stem))]
            test = [(f, m["label"]) for f, m in named if int(m["take"]) in FSDD_TEST_TAKES]
            files = test or [(f, m["label"]) for f, m in named]
            which = (f"the test split of {path} (takes 0-4 of each digit and speaker; takes 5-49 train)" if test
                     else f"every WAV in {path} (no takes 0-4: no test split)")
    else:
        raise UserError(f"unknown task {task!r}")
    if not files:
        raise UserError(f"{path}: no labelled {task} files found (expected one folder per class)")
    log(f"evaluating {len(files)} samples: {which}")
    return [str(f) for f, _ in files], [name for _, name in files]
