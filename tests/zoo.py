"""The architecture zoo: small Keras 3 models of every architecture edgekit converts, each trained
briefly on learnable synthetic data (so outputs are decisive, not near-uniform), saved as a user would
save them (`model.keras` + `samples.npz`), then put through export, verify and predict.

    python -m tests.zoo --readme README.md          # run the zoo, rewrite the README's table
    python -m tests.zoo --only gru,bilstm --out DIR  # a few entries, table on stdout

The README table sits between `<!-- zoo:start -->` and `<!-- zoo:end -->` and is only ever written
from a run (tests/test_zoo.py writes it too with `EDGEKIT_ZOO_README=README.md`). Next to each
model's own results it reports what Keras' own `model.export(format="litert")` produced and whether
ai-edge-litert runs that file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a GPU traces CudnnRNNV3, which no converter takes

T, F, CLASSES, VOCAB, SIDE = 24, 8, 3, 200, 4
IMAGE = 32  # smallest side every keras.applications backbone here accepts with include_top=False
ALL_TFLITE = ("fp32", "fp16", "dynamic", "int8", "int16x8")
ONNX = ("fp32", "int8")
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"


@dataclass(frozen=True)
class Entry:
    name: str
    covers: str                      # what the entry proves, for the table
    data: str                        # "sequence" | "tokens" | "two_inputs" | "images"
    tflite: tuple[str, ...] = ("fp32", "int8")
    epochs: int = 8
    samples: int = 384
    expect_refusal: str = ""         # the TFLite export is refused with a line holding this text


# Every variant on one model per family; the others run fp32 and int8, the variants that prove
# something new about their ops (fp16/dynamic store the same graph's weights differently).
ENTRIES: dict[str, Entry] = {e.name: e for e in (
    Entry("lstm_stacked", "2 stacked LSTMs (return_sequences true, then false)", "sequence", ALL_TFLITE),
    Entry("lstm_per_frame", "LSTM return_sequences=True to per-step softmax", "sequence"),
    Entry("bilstm", "Bidirectional(LSTM)", "sequence"),
    Entry("conv1d_lstm", "Conv1D + MaxPooling1D -> LSTM -> GlobalAveragePooling1D", "sequence"),
    Entry("lstm_two_inputs", "LSTM branch + Dense side-input branch, Concatenate (2 inputs)", "two_inputs"),
    Entry("text_lstm", "Embedding (no mask, pre-padding) -> LSTM", "tokens"),
    Entry("gru", "GRU (no fused op: unrolled)", "sequence", ALL_TFLITE),
    Entry("simple_rnn", "SimpleRNN (no fused op: unrolled)", "sequence", ("fp32", "int8", "int16x8")),
    Entry("masked_lstm", "Embedding(mask_zero=True) -> LSTM", "tokens", expect_refusal="mask_zero=True"),
    Entry("transformer", "Embedding + learned positions, MultiHeadAttention, LayerNorm, GELU", "tokens",
          ALL_TFLITE),
    Entry("mobilenet_v3_small", "MobileNetV3Small (Rescaling, hard-swish)", "images", ALL_TFLITE, epochs=6),
    Entry("efficientnet_b0", "EfficientNetB0 (Rescaling + Normalization)", "images", epochs=6),
    Entry("resnet50", "ResNet50", "images", epochs=4),
    Entry("densenet121", "DenseNet121", "images", epochs=4),
    Entry("convnext_tiny", "ConvNeXtTiny (LayerScale, LayerNorm, GELU)", "images", epochs=4),
)}
# 24-111 MB of weights each: converting all their variants takes longer than the whole suite's budget on
# 2 cores, so `make test` runs them only with EDGEKIT_ZOO_HEAVY=1 (`make test-zoo`); the other 12 entries
# always run. Measured on 2 shared cores (2026-11-26): training 186 s (DenseNet121), 546 s (ResNet50),
# 681 s (ConvNeXtTiny); then export, parity and Keras' own export 115-186 s per entry.
HEAVY = ("resnet50", "densenet121", "convnext_tiny")


# -- learnable synthetic data -----------------------------------------------------------------------

def make_data(kind: str, n: int, seed: int):
    """(x, y): x one array or a list (two inputs); y class ids [n] (per-step models repeat them)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    if kind in ("sequence", "two_inputs"):
        t = np.arange(T)[None, :, None]
        freq = (1.0 + y)[:, None, None] * np.pi / 8  # the class is the frequency of a sine in channel 0..2
        x = 0.3 * rng.normal(size=(n, T, F))
        x[:, :, :CLASSES] += np.sin(freq * t + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
        x = x.astype("float32")
        if kind == "two_inputs":
            side = (rng.normal(size=(n, SIDE)) + 0.5 * np.eye(SIDE)[y]).astype("float32")
            return [x, side], y
        return x, y
    if kind == "tokens":  # a class keyword (ids 2..4) among random ids, pre-padded with 0
        x = rng.integers(5, VOCAB, (n, T))
        lengths = rng.integers(T // 3, T + 1, n)
        x[np.arange(T)[None, :] < (T - lengths)[:, None]] = 0
        positions = T - 1 - rng.integers(0, lengths // 2 + 1)
        x[np.arange(n), positions] = 2 + y
        return x.astype("int32"), y
    if kind == "images":  # the class is the colour channel of a bright square, on noise (0..255)
        x = rng.uniform(0, 120, (n, IMAGE, IMAGE, 3))
        corner = rng.integers(0, IMAGE // 2, (n, 2))
        for i in range(n):
            r, c = corner[i]
            x[i, r:r + IMAGE // 2, c:c + IMAGE // 2, y[i]] += 130
        return x.astype("float32"), y
    raise ValueError(kind)


# -- the models -------------------------------------------------------------------------------------

def build(name: str):
    import keras
    from keras import layers as L

    def head(x):
        return L.Dense(CLASSES, activation="softmax", name="probs")(x)

    if name == "lstm_stacked":
        i = keras.Input((T, F), name="frames")
        x = L.LSTM(16, return_sequences=True, name="lstm_1")(i)
        return keras.Model(i, head(L.LSTM(16, name="lstm_2")(x)), name=name)
    if name == "lstm_per_frame":
        i = keras.Input((T, F), name="frames")
        return keras.Model(i, head(L.LSTM(16, return_sequences=True, name="lstm")(i)), name=name)
    if name == "bilstm":
        i = keras.Input((T, F), name="frames")
        return keras.Model(i, head(L.Bidirectional(L.LSTM(12), name="bilstm")(i)), name=name)
    if name == "conv1d_lstm":
        i = keras.Input((T, F), name="frames")
        x = L.Conv1D(16, 3, padding="same", activation="relu", name="conv")(i)
        x = L.MaxPooling1D(2, name="pool")(x)
        x = L.LSTM(16, return_sequences=True, name="lstm")(x)
        return keras.Model(i, head(L.GlobalAveragePooling1D(name="gap")(x)), name=name)
    if name == "lstm_two_inputs":
        seq, side = keras.Input((T, F), name="frames"), keras.Input((SIDE,), name="side")
        x = L.Concatenate(name="join")([L.LSTM(16, name="lstm")(seq),
                                        L.Dense(8, activation="relu", name="side_dense")(side)])
        return keras.Model([seq, side], head(x), name=name)
    if name in ("text_lstm", "masked_lstm"):
        i = keras.Input((T,), dtype="int32", name="tokens")
        x = L.Embedding(VOCAB, 16, mask_zero=name == "masked_lstm", name="embedding")(i)
        return keras.Model(i, head(L.LSTM(16, name="lstm")(x)), name=name)
    if name == "gru":
        i = keras.Input((T, F), name="frames")
        return keras.Model(i, head(L.GRU(16, name="gru")(i)), name=name)
    if name == "simple_rnn":
        i = keras.Input((T, F), name="frames")
        return keras.Model(i, head(L.SimpleRNN(16, name="rnn")(i)), name=name)
    if name == "transformer":
        from edgekit.train.models import transformer_classifier

        return transformer_classifier(T, VOCAB, CLASSES, dim=16, heads=2, name=name)
    return image_classifier(name)


def image_classifier(name: str):
    import keras
    from keras import layers as L

    apps = keras.applications
    shape = (IMAGE, IMAGE, 3)
    builders = {
        "mobilenet_v3_small": lambda: apps.MobileNetV3Small(input_shape=shape, include_top=False, weights=None,
                                                            include_preprocessing=True),
        "efficientnet_b0": lambda: apps.EfficientNetB0(input_shape=shape, include_top=False, weights=None),
        "resnet50": lambda: apps.ResNet50(input_shape=shape, include_top=False, weights=None),
        "densenet121": lambda: apps.DenseNet121(input_shape=shape, include_top=False, weights=None),
        "convnext_tiny": lambda: apps.ConvNeXtTiny(input_shape=shape, include_top=False, weights=None),
    }
    base = builders[name]()
    for layer in base.layers:  # short training from scratch: moving statistics must keep up
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.5
    images = keras.Input(shape, name="images")
    # ResNet/DenseNet expect preprocessed inputs; the others carry their own Rescaling layer.
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(images) if name in ("resnet50", "densenet121") else images
    x = L.GlobalAveragePooling2D(name="gap")(base(x))
    return keras.Model(images, L.Dense(CLASSES, activation="softmax", name="probs")(x), name=name)


def train(entry: Entry, workdir: Path, seed: int = 0) -> dict:
    """Train `entry` briefly, save model.keras + samples.npz (+ calibration) in `workdir`."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build(entry.name)
    x, y = make_data(entry.data, entry.samples, seed)
    per_step = len(model.outputs[0].shape) == 3
    targets = np.repeat(y[:, None], T, 1) if per_step else y
    model.compile(optimizer=keras.optimizers.Adam(3e-3 if entry.data != "images" else 1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x, targets, epochs=entry.epochs, batch_size=32, verbose=0)
    seconds = time.perf_counter() - start
    test_x, test_y = make_data(entry.data, 64, seed + 1)
    probs = np.asarray(model.predict(test_x, verbose=0))
    keras_accuracy = float(np.mean(_decisions(probs) == test_y))
    workdir.mkdir(parents=True, exist_ok=True)
    model.save(workdir / "model.keras")
    # verify wants one label per decision: per-step outputs get the sample's label at every step
    _save_npz(workdir / "samples.npz", model, test_x, np.repeat(test_y[:, None], T, 1) if per_step else test_y)
    _save_npz(workdir / "calibration.npz", model, x[:128] if not isinstance(x, list) else [a[:128] for a in x])
    return {"train_seconds": round(seconds, 1), "train_accuracy": float(history.history["accuracy"][-1]),
            "keras_accuracy": keras_accuracy}


def _decisions(probs: np.ndarray) -> np.ndarray:
    """Class decisions; per-step outputs decide by the sum over steps."""
    return probs.sum(1).argmax(-1) if probs.ndim == 3 else probs.argmax(-1)


def _save_npz(path: Path, model, x, y=None) -> None:
    """`x` for one-input models, one array per input name otherwise (the export --calibration format)."""
    arrays = {spec.name: a for spec, a in zip(model.inputs, x)} if isinstance(x, list) else {"x": x}
    if y is not None:
        arrays["y"] = y
    np.savez(path, **arrays)


def load_inputs(path: Path, model) -> tuple:
    """(inputs, one label per sample): per-step labels repeat the sample's label (see train)."""
    with np.load(path) as data:
        y = data["y"] if "y" in data.files else None
        y = y[:, 0] if y is not None and y.ndim == 2 else y
        if "x" in data.files:
            return data["x"], y
        return [data[spec.name] for spec in model.inputs], y


# -- export, verify, predict ------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    covers: str
    train: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)   # "tflite/int8" -> {status, ops_ok, error, agreement, size}
    keras_litert: dict = field(default_factory=dict)
    refusal: str = ""


def run_entry(entry: Entry, workdir: Path) -> Result:
    """Export every variant of the trained entry in `workdir`; measure parity and agreement."""
    import keras

    from edgekit.export import formats, lstm, opcheck, recipes, tflite
    from edgekit.export import onnx as onnx_export
    from edgekit.export.keras_layers import keras_layer_classes

    result = Result(entry.name, entry.covers)
    model = keras.models.load_model(workdir / "model.keras")
    x, y = load_inputs(workdir / "samples.npz", model)
    calibration, _ = load_inputs(workdir / "calibration.npz", model)
    reference = np.asarray(model(x, training=False))
    layer_classes = keras_layer_classes(model)
    for variant in entry.tflite:
        key = f"tflite/{variant}"
        start = time.perf_counter()
        why_not = formats.host("tflite").refusal(recipes.get(variant), set(layer_classes.values()))
        if why_not and not result.refusal:
            result.variants[key] = {"status": "skipped", "reason": why_not}
            continue
        try:
            data = tflite.convert(model, variant, calibration=calibration)
        except tflite.ConverterRefused as exc:
            result.variants[key] = {"status": "skipped", "reason": str(exc)}
            continue
        except lstm.UnsupportedForRebuild as exc:
            result.refusal = str(exc)
            result.variants[key] = {"status": "refused", "reason": str(exc)}
            break
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result of the zoo, reported
            result.variants[key] = {"status": "failed", "reason": _line(exc)}
            continue
        path = workdir / f"{variant}.tflite"
        path.write_bytes(data)
        details = formats.device("tflite").read_graph(data).describe()
        problems = opcheck.check_ops("tflite", details["op_records"], layer_classes)
        got = _run_file(path, x, model)
        result.variants[key] = _measure(reference, got, y, len(data), problems, details["ops"],
                                        time.perf_counter() - start)
    fp32 = workdir / "fp32.onnx"
    for variant in ONNX:
        start = time.perf_counter()
        path = fp32 if variant == "fp32" else workdir / "int8.onnx"
        try:
            if variant == "fp32":
                onnx_export.convert_fp32(model, fp32)
            else:
                onnx_export.quantize_int8(fp32, path, calibration)
            onnx_export.check(path)
        except Exception as exc:  # noqa: BLE001 - reported as a failed variant
            result.variants[f"onnx/{variant}"] = {"status": "failed", "reason": _line(exc)}
            break
        details = formats.device("onnx").read_graph(path.read_bytes()).describe()
        problems = opcheck.check_ops("onnx", details["op_records"], layer_classes)
        result.variants[f"onnx/{variant}"] = _measure(reference, _run_file(path, x, model), y,
                                                      path.stat().st_size, problems, details["ops"],
                                                      time.perf_counter() - start)
    return result


def _run_file(path: Path, x, model):
    """A converted file's outputs on `x` (a list in the Keras model's input order for several inputs), run as a
    device runs it (the runtime's runner, XNNPACK on)."""
    import converted

    return converted.run(path, x, [spec.name for spec in model.inputs])


def _measure(reference, got, y, size, problems, ops, seconds) -> dict:
    decisions = _decisions(reference)
    return {"status": "ok", "ops_ok": not problems, "problems": problems, "ops": ops,
            "max_abs_err": float(np.max(np.abs(reference - got))),
            "agreement": float(np.mean(_decisions(got) == decisions)),
            "accuracy": float(np.mean(_decisions(got) == y)) if y is not None else None,
            "size": int(size), "seconds": round(seconds, 1)}


def cli_check(entry: Entry, workdir: Path, variants: tuple[str, ...] = ("fp32", "int8"),
              device: str | None = "rpi4") -> dict:
    """The user's path, with the CLI alone: `edgekit export MODEL.keras --calibration`, then
    `edgekit verify MODEL ARTIFACTS --data samples.npz`, `edgekit predict BUNDLE x.npy|npz` and
    `edgekit devices check DEVICE BUNDLE` (the int8 TFLite bundle on the emulated device).
    Returns each command's exit code and last output line, and the predicted classes of the int8
    TFLite bundle next to Keras' on three samples."""
    import keras

    edgekit = [sys.executable, "-m", "edgekit"]
    art = workdir / "artifacts"
    model_file = workdir / f"{entry.name}.keras"
    if not model_file.exists():
        model_file.symlink_to(workdir / "model.keras")
    steps = {
        "export": [*edgekit, "export", str(model_file), "--calibration", str(workdir / "calibration.npz"),
                   "--name", entry.name, "--out", str(art), "--variants", ",".join(variants)],
        "verify": [*edgekit, "verify", str(model_file), str(art), "--data", str(workdir / "samples.npz"),
                   "--json", str(workdir / "verify.json")],
    }
    model = keras.models.load_model(workdir / "model.keras")
    x, _ = load_inputs(workdir / "samples.npz", model)
    few = [a[:3] for a in x] if isinstance(x, list) else x[:3]
    sample = workdir / ("few.npz" if isinstance(x, list) else "few.npy")
    if isinstance(x, list):
        np.savez(sample, **{spec.name: a for spec, a in zip(model.inputs, few)})
    else:
        np.save(sample, few)
    steps["predict"] = [*edgekit, "predict", str(art / f"{entry.name}-tflite-int8"), str(sample), "--json"]
    if device:
        steps["devices"] = [*edgekit, "devices", "check", device, str(art / f"{entry.name}-tflite-int8"),
                            "--json", str(workdir / f"devices-{device}.json")]
    report: dict = {}
    for step, command in steps.items():
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        report[step] = {"code": done.returncode, "last": lines[-1][:300] if lines else "",
                        "failed": [line for line in lines if " failed: " in line]}
        if step == "predict" and done.returncode == 0:
            predictions = json.loads(done.stdout)["predictions"]
            probs = np.array([next(iter(p["outputs"].values())) for p in predictions])
            report[step]["classes"] = _decisions(probs).tolist()
        if done.returncode not in (0, 1):  # 1 = some variant failed/gate failed: still go on
            break
    report["keras_classes"] = _decisions(np.asarray(model(few, training=False))).tolist()
    return report


def keras_litert_export(workdir: Path) -> dict:
    """Keras' own `model.export(format="litert")`: its ops, and whether ai-edge-litert runs the file."""
    import keras

    from edgekit.export import formats

    model = keras.models.load_model(workdir / "model.keras")
    path = workdir / "keras_export.tflite"
    try:
        model.export(str(path), format="litert", verbose=False)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the peer's result
        return {"exported": False, "reason": _line(exc), "ops": {}, "runs": False}
    ops = formats.device("tflite").read_graph(path.read_bytes()).histogram()
    notable = sorted(op for op in ops if op.startswith("Flex") or op in ("WHILE", "CUSTOM")
                     or op.startswith("UNIDIRECTIONAL"))
    try:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        runs, why = True, ""
    except Exception as exc:  # noqa: BLE001
        runs, why = False, _line(exc)
    return {"exported": True, "ops": ops, "notable": notable, "runs": runs, "reason": why,
            "size": path.stat().st_size}


def _line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = next((line for line in lines if "failed to prepare" in line or "error:" in line), None)
    return (useful or (lines[0] if lines else type(exc).__name__))[:160]


def run_zoo(names, root: Path, keras_litert: bool = True, log=print, cached_only: bool = False) -> list[Result]:
    results = []
    for name in names:
        entry = ENTRIES[name]
        workdir = root / name
        start = time.perf_counter()
        saved = workdir / "result.json"
        if saved.is_file():  # trained and converted before (same --out): reuse
            results.append(Result(**json.loads(saved.read_text())))
            continue
        if cached_only:
            continue
        try:
            trained = train(entry, workdir) if not (workdir / "train.json").is_file() else \
                json.loads((workdir / "train.json").read_text())
            (workdir / "train.json").write_text(json.dumps(trained))
            result = run_entry(entry, workdir)
            result.train = trained
            if keras_litert:
                result.keras_litert = keras_litert_export(workdir)
            saved.write_text(json.dumps(result.__dict__, default=str))
        except Exception as exc:  # noqa: BLE001 - one broken entry must not hide the others' results
            traceback.print_exc()
            result = Result(entry.name, entry.covers, refusal=f"zoo error: {_line(exc)}")
        log(f"{name}: {time.perf_counter() - start:.0f} s")
        results.append(result)
    return results


# -- the README table -------------------------------------------------------------------------------

def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def markdown_table(results: list[Result]) -> str:
    rows = ["| model | covers | TFLite fp32: ops check, max err vs Keras | TFLite int8: ops check, agreement "
            "| TFLite sizes fp32 / fp16 / dynamic / int8 / int16x8 | ONNX fp32 err / int8 agreement | Keras "
            "`export(format=\"litert\")` |", "|---|---|---|---|---|---|---|"]
    for r in results:
        v = r.variants

        def ok(key, v=v):
            item = v.get(key) or {}
            if item.get("status") != "ok":
                return item.get("status", "not run")
            return "builtin ✓" if item["ops_ok"] else "✗ " + "; ".join(item["problems"])[:80]

        if r.refusal:
            tflite_fp32 = tflite_int8 = f"refused: {r.refusal.split(':')[0]}"
            sizes = "-"
        else:
            fp32, int8 = v.get("tflite/fp32", {}), v.get("tflite/int8", {})
            tflite_fp32 = f"{ok('tflite/fp32')}, {fp32.get('max_abs_err', float('nan')):.1e}"
            ops = int8.get("ops") or {}
            fused = ops.get("UNIDIRECTIONAL_SEQUENCE_LSTM", 0)
            form = f"{fused}× fused LSTM, " if fused else ""
            tflite_int8 = (f"{ok('tflite/int8')}, {int8.get('agreement', float('nan')):.0%} "
                           f"({form}{sum(ops.values())} ops)")
            sizes = " / ".join(_size(v[f"tflite/{k}"]["size"]) if v.get(f"tflite/{k}", {}).get("size")
                               else ("skipped" if f"tflite/{k}" in v else "-")
                               for k in ALL_TFLITE)
        onnx_failed = next((item["reason"] for key, item in v.items()
                            if key.startswith("onnx/") and item["status"] == "failed"), None)
        onnx = f"failed: {onnx_failed[:70]}" if onnx_failed else \
            f"{v['onnx/fp32']['max_abs_err']:.1e} / {v['onnx/int8']['agreement']:.0%}" if "onnx/int8" in v else "-"
        peer = r.keras_litert
        if not peer:
            keras_cell = "not run"
        elif not peer["exported"]:
            keras_cell = f"export fails: {peer['reason']}"
        else:
            notable = ", ".join(peer["notable"]) or "builtin ops"
            why = "Flex delegate needed" if "Flex delegate" in peer["reason"] else peer["reason"][:60]
            keras_cell = f"{notable}; " + ("runs in ai-edge-litert" if peer["runs"]
                                           else f"ai-edge-litert cannot run it ({why})")
        rows.append(f"| {r.name} | {r.covers} | {tflite_fp32} | {tflite_int8} | {sizes} | {onnx} | {keras_cell} |")
    return "\n".join(rows)


def write_readme(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    note = ("Generated by `python -m tests.zoo --readme README.md` (tests/zoo.py): each model trained "
            "briefly on learnable synthetic data; agreement = same class as Keras on 64 held-out samples.")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{head}{START}\n{note}\n\n{table}\n{END}{tail}", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated entries (default: all)")
    parser.add_argument("--out", default="/tmp/edgekit-zoo", help="work folder (trained models are reused)")
    parser.add_argument("--readme", help="rewrite the table between the zoo markers of this file")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--no-keras-litert", action="store_true", help="skip Keras' own export")
    parser.add_argument("--cached-only", action="store_true",
                        help="table of the entries already run in --out (run nothing)")
    parser.add_argument("--cli", action="store_true",
                        help="also put each entry through the CLI alone: export, verify, predict, devices check rpi4")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ENTRIES)
    try:
        results = run_zoo(names, Path(args.out), keras_litert=not args.no_keras_litert,
                          log=lambda m: print(m, file=sys.stderr, flush=True), cached_only=args.cached_only)
    except Exception:
        traceback.print_exc()
        return 3
    table = markdown_table(results)
    if args.cli:
        for result in results:
            if result.name in ENTRIES and not ENTRIES[result.name].expect_refusal:
                report = cli_check(ENTRIES[result.name], Path(args.out) / result.name)
                codes = ", ".join(f"{step} {r['code']}" for step, r in report.items() if isinstance(r, dict))
                stopped = next((f"; {step} said: {r['last']}" for step, r in report.items()
                                if isinstance(r, dict) and r["code"] not in (0, 1)), "")
                print(f"{result.name}: {codes}; int8 predict {report.get('predict', {}).get('classes')} vs "
                      f"Keras {report['keras_classes']}{stopped}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    if args.readme:
        write_readme(Path(args.readme), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
