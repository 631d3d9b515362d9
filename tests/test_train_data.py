"""Training data loaders on small generated files: good layouts, and every bad-data case gives a
clear UserError (or a counted skip)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from PIL import Image

from edgekit.core import UserError
from edgekit.train.data import load_images, load_text, load_wavs, read_text_table


def _rows(n=40):
    return [("spam" if i % 3 == 0 else "ham", f"message number {i} with words {i % 7}") for i in range(n)]


def test_tsv_with_header_is_detected(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for l, t in _rows()), encoding="utf-8")
    texts, names, skipped = read_text_table(path)
    assert len(texts) == 40 and set(names) == {"ham", "spam"} and not skipped
    assert texts[0] == "message number 0 with words 0"


def test_csv_without_header_and_quoted_commas(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("".join(f'"{t}, really",{l}\n' for l, t in _rows()), encoding="utf-8")
    texts, names, _ = read_text_table(path)
    assert len(texts) == 40  # the first row is data, not a header
    assert texts[0] == "message number 0 with words 0, really" and names[0] == "spam"


def test_named_columns_are_used(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,category,body\n" + "".join(f"{i},{l},{t}\n" for i, (l, t) in
                                                   enumerate(_rows())), encoding="utf-8")
    texts, names, _ = read_text_table(path, text_column="body", label_column="category")
    assert names[:3] == ["spam", "ham", "ham"] and texts[1].startswith("message number 1")


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("label,text\nham,hello\nspam,win\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no column named 'message'; columns are: label, text"):
        read_text_table(path, text_column="message")


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"label\ttext\nham\thello\nspam\tcaf\xe9 prize\n")
    with pytest.raises(UserError, match="line 3 is not valid UTF-8"):
        read_text_table(path)


def test_single_class_text_is_refused(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("label\ttext\n" + "ham\thello there\n" * 20, encoding="utf-8")
    with pytest.raises(UserError, match="at least 2 classes"):
        load_text(path, seed=0)


def test_short_rows_are_counted_as_skipped(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for l, t in _rows()) + "ham\n\tno label\n",
                    encoding="utf-8")
    dataset = load_text(path, seed=0)
    summary = dataset.summary()
    assert summary["skipped"] == 2
    assert summary["train"] + summary["val"] + summary["test"] == 40


def test_splits_are_deterministic_and_disjoint(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for l, t in _rows(100)), encoding="utf-8")
    a, b, c = (load_text(path, seed=s) for s in (0, 0, 1))
    assert a.splits["test"][0] == b.splits["test"][0]
    assert a.splits["test"][0] != c.splits["test"][0]
    train, val, test = (set(a.splits[s][0]) for s in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and len(train | val | test) == 100


def _image_folder(root, classes=("cat", "dog"), per_class=6):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_class_folders_load(tmp_path):
    dataset = load_images(_image_folder(tmp_path / "imgs"), seed=0)
    assert dataset.labels == ["cat", "dog"]
    assert sum(len(dataset.splits[s][1]) for s in ("train", "val", "test")) == 12
    assert dataset.splits["train"][0][0].shape == (12, 10, 3)


def test_train_and_test_subfolders_use_test_as_heldout(tmp_path):
    _image_folder(tmp_path / "d" / "train")
    _image_folder(tmp_path / "d" / "test", per_class=3)
    dataset = load_images(tmp_path / "d", seed=0)
    assert len(dataset.splits["test"][1]) == 6
    assert len(dataset.splits["train"][1]) + len(dataset.splits["val"][1]) == 12


def test_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class subfolders"):
        load_images(tmp_path / "empty", seed=0)


def test_single_image_class_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"need at least 2 classes .*found 1 \(cat\)"):
        load_images(_image_folder(tmp_path / "one", classes=("cat",)), seed=0)


def test_class_folder_without_images_is_refused(tmp_path):
    root = _image_folder(tmp_path / "d")
    (root / "bird").mkdir()
    with pytest.raises(UserError, match="bird has no images"):
        load_images(root, seed=0)


def test_corrupt_images_are_counted_and_reported(tmp_path, capsys):
    root = _image_folder(tmp_path / "d")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    dataset = load_images(root, seed=0)
    assert dataset.summary()["skipped"] == 1
    assert dataset.summary()["skipped_reasons"] == {"unreadable images": 1}
    assert "broken.jpg" in capsys.readouterr().err


def _wav(path, rate=8000, seconds=0.3, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(samples, channels).tobytes())


def test_fsdd_names_split_by_take(tmp_path):
    for digit in "01":
        for take in range(8):
            _wav(tmp_path / f"{digit}_alice_{take}.wav")
    dataset = load_wavs(tmp_path, seed=0)
    assert dataset.labels == ["0", "1"]
    assert len(dataset.splits["test"][1]) == 10  # takes 0-4 of both digits
    assert dataset.extra["sample_rate"] == 8000


def test_wav_class_folders_load(tmp_path):
    for label in ("yes", "no"):
        for i in range(6):
            _wav(tmp_path / label / f"{i}.wav")
    dataset = load_wavs(tmp_path, seed=0)
    assert dataset.labels == ["no", "yes"]


def test_mixed_sample_rates_are_refused(tmp_path):
    for i in range(4):
        _wav(tmp_path / f"0_a_{i}.wav", rate=8000)
        _wav(tmp_path / f"1_a_{i + 5}.wav", rate=16000)
    with pytest.raises(UserError, match="mixed sample rates .*4 files at 16000 Hz"):
        load_wavs(tmp_path, seed=0)


def test_unreadable_and_unsupported_wavs_are_counted_and_stereo_is_read(tmp_path):
    import struct

    for digit in "01":
        for take in range(7):
            _wav(tmp_path / f"{digit}_a_{take}.wav")
    (tmp_path / "0_a_90.wav").write_bytes(b"garbage")
    # A-law (format 6): still unsupported. Stereo is mixed down to mono by the shared WAV reader.
    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    (tmp_path / "1_a_91.wav").write_bytes(b"RIFF" + struct.pack("<I", 36 + 8) + b"WAVEfmt " + struct.pack("<I", 16)
                                          + fmt + b"data" + struct.pack("<I", 8) + bytes(8))
    _wav(tmp_path / "1_a_92.wav", channels=2)
    dataset = load_wavs(tmp_path, seed=0)
    assert dataset.summary()["skipped"] == 2
    assert dataset.summary()["train"] + dataset.summary()["val"] == 5  # takes 5, 6 and the stereo 92


def test_badly_named_wavs_are_refused(tmp_path):
    _wav(tmp_path / "recording.wav")
    with pytest.raises(UserError, match="does not follow"):
        load_wavs(tmp_path, seed=0)


def test_empty_wav_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="no .wav files"):
        load_wavs(tmp_path, seed=0)


def test_evaluation_data_is_the_test_split_where_the_data_names_one(tmp_path, capsys):
    """`verify --data` on an FSDD folder used to evaluate the training takes 5-49 too (inflated accuracy)."""
    from edgekit.train.data import load_raw

    for digit in ("0", "1"):
        for take in (0, 4, 5, 49):
            _wav(tmp_path / "fsdd" / f"{digit}_george_{take}.wav")
    files, labels = load_raw("speech", tmp_path / "fsdd")
    assert sorted(f.rsplit("/", 1)[1] for f in files) == ["0_george_0.wav", "0_george_4.wav",
                                                           "1_george_0.wav", "1_george_4.wav"]
    assert sorted(labels) == ["0", "0", "1", "1"]
    assert "evaluating 4 samples: the test split" in capsys.readouterr().err
    _image_folder(tmp_path / "img" / "train")
    _image_folder(tmp_path / "img" / "test", per_class=2)
    files, _ = load_raw("image", tmp_path / "img")
    assert len(files) == 4 and all("/test/" in f for f in files)
    assert "the test split" in capsys.readouterr().err
