"""Listening to a speaker the model never heard (issue 24): train the quick speech model on four FSDD
speakers, export it to TFLite fp32, and compare `edgekit listen` on the fifth speaker's takes 0-4
(with pauses, 44.1 kHz stereo) against clip-by-clip `predict` on the same takes, both through the
runtime CLI in a child process without TensorFlow (the measurement of tests/test_listen.py).

    .venv/bin/python tests/listen_holdout.py [--speakers george,jackson] [--work DIR] [--seed 0]
        [--default-training]

prints one JSON line per held-out speaker. Trained models are kept under --work/<speaker>/ and reused
(delete the folder after changing training). Used by tests/test_listen.py's held-out test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")


def holdout_data(fsdd: Path, speaker: str, folder: Path) -> Path:
    """A folder of symlinks to the other four speakers' FSDD files (the data is never copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(fsdd.glob("*.wav")):
        if f.stem.split("_")[1] != speaker and not (folder / f.name).exists():
            (folder / f.name).symlink_to(f.resolve())
    return folder


def train_without(fsdd: Path, speaker: str, work: Path, seed: int = 0, quick: bool = True) -> Path:
    """The speech model (tests/conftest.py's quick settings, or the defaults) trained without `speaker`,
    exported to TFLite fp32: the bundle's path (reused when already there)."""
    bundle = work / "bundles" / "speech-tflite-fp32"
    if bundle.exists():
        return bundle
    from conftest import QUICK_TRAINING

    from edgekit.export import export_model
    from edgekit.train import train_model

    data = holdout_data(fsdd, speaker, work / "data")
    settings = dict(quick=True, **QUICK_TRAINING["speech"]) if quick else {}
    model_dir = train_model("speech", out=work / "speech", data=str(data), seed=seed, **settings)
    export_model(model_dir, work / "bundles", formats=("tflite",), variants=("fp32",))
    return bundle


def measure(fsdd: Path, bundle: Path, speaker: str, tmp: Path) -> dict:
    """listen vs clip-by-clip predict on `speaker`'s takes 0-4 (test_listen's recording)."""
    import soxr
    from test_listen import _per_digit_accuracy, _recording, _run
    from test_preprocess_audio import write_wav

    recording, truth, files = _recording(fsdd, speaker=speaker)
    stereo = soxr.resample(np.stack([recording, 0.8 * recording], axis=1), 8000, 44100, "VHQ")
    tmp.mkdir(parents=True, exist_ok=True)
    wav = write_wav(tmp / f"{speaker}-44k-stereo.wav", np.clip(stereo, -1, 1), rate=44100)
    clips = _run(["predict", bundle, *files, "--json"], timeout=600)
    if clips.returncode:
        raise RuntimeError(clips.stderr[-2000:])
    predicted = [row["label"] for row in json.loads(clips.stdout)["predictions"]]
    clip_accuracy = float(np.mean([p == f.name.split("_")[0] for p, f in zip(predicted, files)]))
    heard = _run(["listen", bundle, wav, "--json"], timeout=600)
    if heard.returncode:
        raise RuntimeError(heard.stderr[-2000:])
    words = [json.loads(line) for line in heard.stdout.splitlines()]
    accuracy, inserted = _per_digit_accuracy(words, truth)
    return {"speaker": speaker, "clip": round(clip_accuracy, 3), "listen": round(accuracy, 3),
            "gap": round(clip_accuracy - accuracy, 3), "words": len(words), "spoken": len(truth),
            "inserted": inserted}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", default=",".join(SPEAKERS))
    parser.add_argument("--work", default="/tmp/listen-holdout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default-training", action="store_true",
                        help="train with edgekit's default speech settings instead of the suite's quick ones")
    parser.add_argument("--fsdd", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/fsdd"))
    args = parser.parse_args(argv)
    fsdd = Path(args.fsdd)
    if not fsdd.is_dir():
        fsdd = Path("/work/shared/data/fsdd")
    for speaker in args.speakers.split(","):
        work = Path(args.work) / speaker
        bundle = train_without(fsdd, speaker, work, args.seed, quick=not args.default_training)
        meta = json.loads((work / "speech" / "edgekit.json").read_text())
        row = measure(fsdd, bundle, speaker, work / "recording")
        row["utterance_accuracy"] = round(meta["metrics"]["utterance_accuracy"], 3)  # 4 speakers' takes 0-4
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
