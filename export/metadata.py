"""TFLite Model Metadata for phone apps (MediaPipe Tasks / LiteRT support library), written into a
bundle's model.tflite FROM the model's edgekit.json (the manifest's source of truth) at export.

What is written, per task (docs/phones.md explains the why):
- image: MediaPipe ImageClassifier metadata: RGB input, normalization mean/std, the image size (the
  input tensor's shape), and the labels as an associated file (labels.txt) on the output. Written
  with MediaPipe 0.10.21's own writer in its cached environment (export/mediapipe_env.py), so the
  result is what MediaPipe Tasks accept. Not written for BGR models (caffe-mode backbones: MediaPipe
  always feeds RGB) or integer image inputs (--int8-io int8/uint8: MediaPipe then feeds raw 0..255
  pixels, not our quantized normalized values).
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

WRITER = f"mediapipe {mediapipe_env.MEDIAPIPE_VERSION} metadata_writers"
TEXT_REASON = ("MediaPipe's RegexTokenizer cannot express our text preprocessing: it does not "
               "lowercase, it splits on a delimiter regex where we delete punctuation inside words, it "
               "prepends <START> and pads after the tokens where our LSTM was trained on pre-padded ids")
SPEECH_REASON = ("MediaPipe's AudioClassifier feeds raw waveform samples to the model; this model "
                 "takes log-mel/MFCC frames from edgekit's numpy front end")


def why_not(metadata: dict, input_spec: dict) -> str | None:
    """Why no MediaPipe metadata can describe this model's input (None: it can)."""
    task = metadata.get("task")
    params = metadata.get("preprocessing") or {}
    if task == "text":
        return TEXT_REASON
    if task == "speech":
        return SPEECH_REASON
    if task != "image":
        return f"no MediaPipe task for {task!r} models"
    if params.get("channel_order", "RGB") != "RGB":
        return (f"the model takes {params.get('channel_order')} input ({params.get('mode')} mode); "
                "MediaPipe feeds RGB")
    if not metadata.get("labels") or not params.get("mean") or not params.get("std"):
        return "the model has no labels or no normalization mean/std to describe"
    if input_spec.get("dtype") != "float32":
        return (f"the model's input is {input_spec.get('dtype')}: MediaPipe would feed raw 0..255 pixels; "
                "export with --int8-io float32 (the default)")
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
