"""Output heads, registered once: what one model output means, and so how it is read out and judged.

A head is the output side of a model, as a kind (runtime/kinds.py) is its input side. Each head says
- `applies(spec, context)`: whether it is the one to infer for an output (its shape, the bundle's
  labels and kind) where the manifest does not say;
- `results(values, labels, context)`: float outputs (batch first) -> one result per sample;
- `decisions(values)`: the class decided per row (or frame), where the head decides anything;
- `gate_overrides()`: limits of the tolerance table that do not apply to it (runtime/gates.py).

Today's heads: `classes` (probabilities over labels, [N, C]), `frames` (per-frame classes with a
silence class, [N, T, C], judged per utterance), `values` (anything else: returned as arrays, and
never judged by top-1 agreement). Adding a head: one class here and one entry in HEADS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    label: str
    index: int
    probabilities: dict[str, float]                  # label -> probability (per utterance for speech)
    frame_labels: list[str] | None = None            # speech: top-1 label per frame
    frame_probabilities: np.ndarray | None = field(default=None, repr=False)  # speech: [T, C]

    @property
    def score(self) -> float:
        return self.probabilities[self.label]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:max(1, int(k))]

    def to_dict(self, top_k: int | None = None) -> dict:
        out = {"label": self.label, "index": self.index, "score": self.score,
               "probabilities": dict(self.top(top_k)) if top_k else self.probabilities}
        if self.frame_labels is not None:
            out["frame_labels"] = self.frame_labels
        return out


@dataclass(frozen=True)
class HeadContext:
    """What a head may know about the bundle beyond its own output."""
    labels: list[str] | None = None
    outputs: int = 1                  # how many outputs the model has
    per_frame: bool = False           # the kind judges outputs per frame (speech)
    preprocessing: dict | None = None


def _as_dict(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(labels, row)}


def _labels(labels: list[str] | None, classes: int) -> list[str]:
    return list(labels) if labels and len(labels) == classes else [str(i) for i in range(classes)]


class Head:
    name = ""

    def applies(self, spec: dict, context: HeadContext) -> bool:
        return False

    def results(self, values: np.ndarray, context: HeadContext):
        return values

    def decisions(self, values: np.ndarray) -> np.ndarray | None:
        return None

    def gate_overrides(self) -> dict[str, float | None]:
        return {}


class ClassesHead(Head):
    """Probabilities over classes, one row per sample ([N, C]): the label with the highest one."""
    name = "classes"

    def applies(self, spec, context):
        shape = spec.get("shape") or []
        return len(shape) == 2 and (shape[-1] or 0) >= 2 and context.outputs == 1

    def results(self, values, context):
        rows = values.reshape(values.shape[0], -1)
        labels = _labels(context.labels, rows.shape[-1])
        return [Prediction(labels[int(np.argmax(r))], int(np.argmax(r)), _as_dict(labels, r)) for r in rows]

    def decisions(self, values):
        return np.argmax(values.reshape(-1, values.shape[-1]), axis=-1)


class FramesHead(Head):
    """Per-frame class probabilities with a silence class ([N, T, C]): one label per utterance by the
    kind's utterance rule (runtime/preprocess/audio.py `utterance_probs`), plus the label per frame."""
    name = "frames"

    def applies(self, spec, context):
        return context.per_frame and len(spec.get("shape") or []) == 3

    def results(self, values, context):
        from edgekit.runtime.preprocess.audio import utterance_probs

        if values.ndim != 3:
            return ClassesHead().results(values, context)
        labels = _labels(context.labels, values.shape[-1])
        utterance = np.asarray(utterance_probs(values, context.preprocessing or {}), dtype=np.float64)
        results = []
        for frames, row in zip(values, utterance):
            idx = int(np.argmax(row))
            results.append(Prediction(labels[idx], idx, _as_dict(labels, row),
                                      [labels[int(j)] for j in np.argmax(frames, axis=-1)], frames))
        return results

    def decisions(self, values):
        return np.argmax(values.reshape(-1, values.shape[-1]), axis=-1)


class ValuesHead(Head):
    """Any other output (regression values, sequences, one of several outputs): returned as the
    array it is; top-1 agreement means nothing for it."""
    name = "values"

    def applies(self, spec, context):
        return True

    def gate_overrides(self):
        return {"min_agreement": None}


HEADS: dict[str, Head] = {h.name: h for h in (FramesHead(), ClassesHead(), ValuesHead())}


def infer(spec: dict, context: HeadContext) -> Head:
    """The head of one output (manifest `outputs[i]`): the first registered head that applies."""
    return next(h for h in HEADS.values() if h.applies(spec, context))


def get(name: str) -> Head:
    if name not in HEADS:
        from edgekit.runtime.errors import InvalidInputError

        raise InvalidInputError(f"unknown output head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name]
