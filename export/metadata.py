"""TFLite Model Metadata for phone apps (MediaPipe Tasks / LiteRT support library), written into a
bundle's model.tflite FROM the model's edgekit.json (the manifest's source of truth) at export.

What is written, per task (docs/phones.md explains the why):
- image: MediaPipe ImageClassifier metadata: RGB input, normalization mean/std, the image size (the
  input tensor's shape), and the labels as an associated file (labels.txt) on the output. Written
  with MediaPipe 0.10.21's own writer in its cached environment (export/mediapipe_env.py), so the
  result is what MediaPipe Tasks accept. Not written for BGR models (caffe-mode backbones: MediaPipe
  always feeds RGB) or integer image inputs (--int8-io int8/uint8: MediaPipe then feeds raw 0..255
  pixels, not our quantized normalized values).
The model kinds say which task can run a model, or why none can (runtime/kinds.py `mediapipe_task`):
- text: not written. MediaPipe's RegexTokenizer (measured with an identity model, 0.10.21) does not
  lowercase, splits on a delimiter regex (our standardization deletes punctuation inside words:
  "it's" -> "its"), prepends <START> and pads AFTER the tokens; our LSTM is trained on
  pre-padded ids (the fused TFLite LSTM has no mask). Metadata that loads but tokenizes differently
  would give wrong labels silently.
- speech: not written. The model classifies one log-mel/MFCC frame sequence computed by our numpy
  front end; AudioClassifier feeds raw waveform samples to the model.

A failure never breaks the export: the bundle is written without metadata, and the reason is one
log line and the manifest's export.tflite_metadata record. Set EDGEKIT_MEDIAPIPE=off to skip it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgekit.core import UserError, log
from edgekit.export import mediapipe_env
from edgekit.runtime.errors import EdgekitError
from edgekit.runtime.kinds import kind_of

WRITERS = ("ImageClassifier",)   # the MediaPipe tasks whose metadata edgekit writes

WRITER = f"mediapipe {mediapipe_env.MEDIAPIPE_VERSION} metadata_writers"


def why_not(metadata: dict, input_spec: dict) -> str | None:
    """Why no MediaPipe metadata can describe this model's input (None: it can): the model kind's
    answer (runtime/kinds.py `mediapipe_task`); edgekit writes ImageClassifier metadata."""
    try:
        task, reason = kind_of(metadata.get("task")).mediapipe_task(metadata, input_spec)
    except EdgekitError as exc:
        return str(exc)
    if task is None:
        return reason
    if task not in WRITERS:
        return f"edgekit writes no MediaPipe {task} metadata"
    return None


def write(model_path: Path, metadata: dict, input_spec: dict, label: str = "") -> dict:
    """Put MediaPipe metadata into `model_path` (in place, atomically); return the record kept in
    the manifest: {"written": bool, "writer", "task", "reason", "resize_matches_mediapipe"}."""
    record = {"written": False, "writer": None, "task": None, "reason": None}
    label = label or model_path.parent.name
    reason = why_not(metadata, input_spec)
    if reason is None and mediapipe_env.disabled():
        reason = f"turned off ({mediapipe_env.DISABLE_VARIABLE}=off)"
    if reason is not None:
        record["reason"] = reason
        return record
    params = metadata["preprocessing"]
    request = {"name": metadata.get("name") or "image", "mean": [float(v) for v in params["mean"]],
               "std": [float(v) for v in params["std"]], "labels": list(metadata["labels"]),
               "description": (f"edgekit {metadata.get('name')}: {len(metadata['labels'])} classes, "
                               f"{params['height']}x{params['width']} RGB, "
                               f"resize {params.get('resize', 'bilinear')}")}
    fd, tmp = tempfile.mkstemp(prefix=".metadata-", suffix=".tflite", dir=model_path.parent)
    os.close(fd)
    try:
        mediapipe_env.run("write_image_metadata", {**request, "model": str(model_path), "out": tmp})
        shutil.copymode(model_path, tmp)
        os.replace(tmp, model_path)
    except UserError as exc:
        record["reason"] = str(exc)
        log(f"warning: {label}: no TFLite metadata written ({exc}); the bundle works "
            "in edgekit, but MediaPipe Tasks will not load it")
        return record
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    record.update(written=True, writer=WRITER, task="ImageClassifier",
                  resize_matches_mediapipe=params.get("resize") == "bilinear_mediapipe")
    if not record["resize_matches_mediapipe"]:
        log(f"warning: {label}: trained with resize {params.get('resize')!r}, not "
            "MediaPipe's: phones will label some photos differently (retrain to get bilinear_mediapipe)")
    return record


def read(model_path: str | Path) -> dict:
    """The metadata in a .tflite file as JSON ({"metadata": ... or None, "associated_files": [...]}),
    read with MediaPipe's own reader."""
    return mediapipe_env.run("read_metadata", {"model": str(Path(model_path).resolve())})
