"""Training: `train_model(task, out, ...)` trains one model kind and writes a model directory
(docs/design.md): model.keras, edgekit.json, assets/, heldout.npz, calibration.npz.

Each task module (train/text.py, train/image.py, train/speech.py) provides
`load(data, seed, options) -> Dataset` and `fit(dataset, workdir, epochs, seed, quick, options)
-> TrainResult`; this module does the shared parts: seeds, the atomic output folder, metadata.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.core import UserError, atomic_dir, atomic_write_json, library_versions, log, now_iso, quiet_tensorflow

__all__ = ["train_model", "TrainResult", "TASKS", "OPTIONS"]

TASKS = ("text", "image", "speech")
OPTIONS = ("text_column", "label_column", "backbone", "weights", "input_size", "fine_tune_epochs",
           "features", "batch_size", "max_samples")
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
    module = importlib.import_module(f"edgekit.train.{task}")
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
