"""Training: `train_model(task, out, ...)` trains one model kind and writes a model directory
(docs/design.md): model.keras, edgekit.json, assets/, heldout.npz, calibration.npz.

The training side of each model kind is registered once, in KINDS: its module (train/text.py,
train/image.py, train/speech.py) provides `check_options(options)`, `load(data, seed, options) ->
Dataset` (the user's data, or the embedded synthetic data of train/synthetic.py when data is None)
and `fit(dataset, workdir, epochs, seed, quick, options) -> TrainResult`; its entry lists the
training options that apply to it. This module does the shared parts: seeds, the atomic output
folder, metadata. Adding a kind is one module plus one entry here (and its device side in
edgekit/runtime/kinds.py).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.core import UserError, atomic_dir, atomic_write_json, library_versions, log, now_iso, quiet_tensorflow

__all__ = ["train_model", "TrainResult", "TrainKind", "KINDS", "TASKS", "OPTIONS", "trainer"]


@dataclass(frozen=True)
class TrainKind:
    name: str                     # the task name, as runtime/kinds.py's KINDS knows it
    module: str                   # check_options, load, fit
    options: tuple[str, ...]      # training options (train_model keywords) that apply
    data_layout: str              # its dataset inside a data folder laid out like ../shared/data (pipeline)
    cost_rank: int                # the pipeline starts the costliest first (measured: image, speech, text)


KINDS: dict[str, TrainKind] = {kind.name: kind for kind in (
    TrainKind("text", "edgekit.train.text",
              ("text_column", "label_column", "batch_size", "max_samples", "arch"), "sms_spam/sms_spam.tsv", 2),
    TrainKind("image", "edgekit.train.image",
              ("backbone", "weights", "input_size", "fine_tune_epochs", "batch_size", "max_samples"),
              "cifar10_small", 0),
    TrainKind("speech", "edgekit.train.speech", ("features", "batch_size", "max_samples", "arch"), "fsdd", 1),
)}
TASKS = tuple(KINDS)
OPTIONS = tuple(dict.fromkeys(option for kind in KINDS.values() for option in kind.options))
HELDOUT_MAX = 500
CALIBRATION_MAX = 300


@dataclass
class TrainResult:
    model: object                      # keras.Model
    labels: list[str]
    preprocessing: dict
    architecture: dict
    input_spec: dict
    output_spec: dict
    metrics: dict
    epochs: int
    heldout: dict[str, np.ndarray]     # x, y (+ utterance_y for speech)
    calibration: np.ndarray
    notes: dict = field(default_factory=dict)


def trainer(task: str):
    """The training module of a registered kind."""
    if task not in KINDS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return importlib.import_module(KINDS[task].module)


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    """A deterministic subset of indices (sorted, so order follows the split)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def pick_heldout(n: int, seed: int) -> np.ndarray:
    return _subset(n, HELDOUT_MAX, seed + 1)


def pick_calibration(n: int, seed: int) -> np.ndarray:
    return _subset(n, CALIBRATION_MAX, seed + 2)


def set_seeds(seed: int) -> None:
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(task: str, out: str | Path, data: str | Path | None = None, epochs: int | None = None,
                seed: int = 0, quick: bool = False, **options) -> Path:
    """Train `task` on `data` (default: embedded synthetic data) and write the model directory
    `out`. Returns `out` as a Path. Raises UserError for bad options or data."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    options = {k: v for k, v in options.items() if v is not None}
    if epochs is not None and epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    out = Path(out)
    module = trainer(task)
    module.check_options(options)
    set_seeds(seed)
    dataset = module.load(data, seed, options)
    start = time.perf_counter()
    with atomic_dir(out) as workdir:
        result = module.fit(dataset, workdir, epochs=epochs, seed=seed, quick=quick, options=options)
        train_seconds = round(time.perf_counter() - start, 1)
        result.metrics["train_seconds"] = train_seconds
        _write(workdir, task, result, dataset, seed)
    accuracy = result.metrics.get("utterance_accuracy", result.metrics.get("test_accuracy"))
    log(f"wrote {out}/ (model.keras, edgekit.json, heldout.npz, calibration.npz"
        f"{', assets/' if (out / 'assets').is_dir() else ''}): {task} test accuracy "
        f"{accuracy:.3f} on {dataset.summary()['test']} held-out samples, trained in "
        f"{train_seconds:.0f} s" + (" [synthetic data]" if dataset.synthetic else ""))
    return out


def _write(workdir: Path, task: str, result: TrainResult, dataset, seed: int) -> None:
    result.model.save(workdir / "model.keras")
    np.savez(workdir / "heldout.npz", **result.heldout)
    np.savez(workdir / "calibration.npz", x=result.calibration)
    metadata = {
        "edgekit_version": __version__,
        "task": task,
        "name": task,
        "labels": list(result.labels),
        "input": result.input_spec,
        "output": result.output_spec,
        "preprocessing": result.preprocessing,
        "architecture": result.architecture,
        "data": dataset.summary(),
        "metrics": result.metrics,
        "seed": seed,
        "epochs": result.epochs,
        "versions": library_versions(("numpy", "tensorflow", "keras")),
        "created": now_iso(),
        **result.notes,
    }
    atomic_write_json(workdir / "edgekit.json", metadata)


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.mean(np.argmax(probs, axis=-1) == y)), 4)
