"""Calibrating the latency cost model (`python -m edgekit.devices.estimate --calibrate`): fit the fp32
rates to XNNPACK's published Raspberry Pi latencies of four MobileNets (built here with random
weights, converted to TFLite fp32 and counted by the format's graph reader; the counts are stored in
REFERENCE_WORK so that tests need no conversion), and report the error on figures the fit did not
see. docs/estimates.md explains it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core import UserError
from edgekit.devices.estimate.pricing import count_work, thread_speedup
from edgekit.runtime import profiles
from edgekit.runtime.formats.graph import GraphWork

XNNPACK_README = ("https://github.com/google/XNNPACK/blob/0085ae3628ee7dc042342df5a4e98ebdb55a806c/"
                  "README.md#raspberry-pi")
# XNNPACK's published end-to-end latencies (ms; fp32, randomized weights, multi-threaded: 4 threads,
# 32-bit Raspbian Buster, benchmarked 2020-02-12).
PUBLISHED_MS = {
    "rpi4": {"mobilenet_v1": 75.0, "mobilenet_v2": 44.0, "mobilenet_v3_large": 41.0, "mobilenet_v3_small": 14.0},
    "rpi3plus": {"mobilenet_v1": 115.0, "mobilenet_v2": 79.0, "mobilenet_v3_large": 67.0,
                 "mobilenet_v3_small": 23.0},
    "rpi2": {"mobilenet_v1": 341.0, "mobilenet_v2": 197.0, "mobilenet_v3_large": 165.0,
             "mobilenet_v3_small": 53.0},
}
PUBLISHED_THREADS = 4
# The work of the four MobileNets as `count_work` counts it: keras.applications MobileNet (v1),
# MobileNetV2, MobileNetV3Large and MobileNetV3Small (include_preprocessing=False), 224x224x3,
# alpha 1.0, 1000 classes, weights=None, exported with keras.export.ExportArchive (batch 1) and
# converted by TFLiteConverter.from_saved_model to fp32 (tensorflow 2.21). `--calibrate --recount`
# rebuilds them (a few minutes) and prints this table again.
# Features: conv = conv + dense MACs, dw = depthwise MACs, bytes = weights + activations moved, ops.
REFERENCE_WORK = {
    "mobilenet_v1": {"conv": 551354368, "dw": 17385984, "bytes": 57847952, "ops": 31, "macs": 568740352},
    "mobilenet_v2": {"conv": 280057856, "dw": 20716416, "bytes": 70593128, "ops": 65, "macs": 300774272},
    "mobilenet_v3_large": {"conv": 198197120, "dw": 18392640, "bytes": 82158800, "ops": 122, "macs": 216589760},
    "mobilenet_v3_small": {"conv": 49049856, "dw": 7460544, "bytes": 32593564, "ops": 109, "macs": 56510400},
}
FEATURES = ("conv", "dw", "bytes", "ops")


def reference_features(work: GraphWork) -> dict:
    by = work.by_class()
    return {"conv": by.get("conv", {}).get("macs", 0) + by.get("dense", {}).get("macs", 0),
            "dw": by.get("depthwise", {}).get("macs", 0), "bytes": sum(o.bytes for o in work.ops),
            "ops": len(work.ops), "macs": work.macs}


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares by trying every support (4 unknowns: 15 small solves)."""
    n = a.shape[1]
    best, best_cost = np.zeros(n), float(np.sum(b ** 2))
    for k in range(1, n + 1):
        for support in itertools.combinations(range(n), k):
            cols = list(support)
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.all(x >= 0):
                full = np.zeros(n)
                full[cols] = x
                cost = float(np.sum((a @ full - b) ** 2))
                if cost < best_cost - 1e-15:
                    best, best_cost = full, cost
    return best


def fit(rows: list[tuple[str, str, float]], work: dict[str, dict], iterations: int = 200) -> tuple[np.ndarray, dict]:
    """Fit latency = scale[device] x (features . theta), minimising relative errors.

    `rows` are (device, model, ms). theta (seconds per conv MAC, per depthwise MAC, per byte, per op) is
    shared by the devices: the same kernels on slower or faster cores; scale (relative to the first
    device) is per device. Returns (theta for scale 1, {device: scale})."""
    devices = list(dict.fromkeys(d for d, _, _ in rows))
    x = np.array([[work[m][f] for f in FEATURES] for _, m, _ in rows], dtype=float)
    t = np.array([ms / 1000.0 for _, _, ms in rows])
    norm = x.mean(axis=0) + 1e-30
    scale = {d: 1.0 for d in devices}
    theta = np.zeros(len(FEATURES))
    for _ in range(iterations):
        s = np.array([scale[d] for d, _, _ in rows])
        previous = theta
        theta = _nnls((x / norm) * (s / t)[:, None], np.ones(len(rows))) / norm
        if np.allclose(theta, previous, rtol=1e-6, atol=0):
            break
        f = x @ theta
        for d in devices:
            mask = np.array([r[0] == d for r in rows])
            ratio = f[mask] / t[mask]
            scale[d] = float(ratio.sum() / max((ratio ** 2).sum(), 1e-30))
        first = scale[devices[0]]
        theta, scale = theta * first, {d: v / first for d, v in scale.items()}
    return theta, scale


def predict_ms(theta: np.ndarray, scale: float, features: dict) -> float:
    return 1000.0 * scale * float(np.array([features[f] for f in FEATURES], dtype=float) @ theta)


def held_out_errors(work: dict[str, dict]) -> dict:
    """The estimator's error on figures the fit did not use, two ways:
    - leave-one-out: fit on 11 of the 12 published figures, predict the 12th, for each;
    - cross-device: fit theta on the four Pi 4 figures, each other board's scale on its MobileNet v2
      figure alone, predict that board's three other figures (the Pi 3+ and Pi 2 rows held out)."""
    rows = [(d, m, ms) for d, table in PUBLISHED_MS.items() for m, ms in table.items()]
    loo = []
    for i, (device, model, ms) in enumerate(rows):
        rest = rows[:i] + rows[i + 1:]
        theta, scale = fit(rest, work)
        pred = predict_ms(theta, scale[device], work[model])
        loo.append({"device": device, "model": model, "published_ms": ms, "estimate_ms": round(pred, 1),
                    "error": round(pred / ms - 1, 3)})
    theta4, _ = fit([r for r in rows if r[0] == "rpi4"], work)
    cross = []
    for device in ("rpi3plus", "rpi2"):
        anchor = PUBLISHED_MS[device]["mobilenet_v2"]
        scale = anchor / predict_ms(theta4, 1.0, work["mobilenet_v2"])
        for model, ms in PUBLISHED_MS[device].items():
            if model == "mobilenet_v2":
                continue
            pred = predict_ms(theta4, scale, work[model])
            cross.append({"device": device, "model": model, "published_ms": ms,
                          "estimate_ms": round(pred, 1), "error": round(pred / ms - 1, 3)})

    def summary(items):
        errors = [abs(e["error"]) for e in items]
        return {"rows": items, "mean_abs_error": round(float(np.mean(errors)), 3),
                "max_abs_error": round(float(np.max(errors)), 3)}

    return {"leave_one_out": summary(loo), "cross_device": summary(cross)}


# From the fit to the profiles' cost_model -----------------------------------------------------------

PARALLEL_FRACTION = {"default": 0.9, "lstm": 0.0}
# LSTM MACs run at this fraction of the conv rate. x86: measured (edgekit's speech model, see SOURCES);
# ARM: the x86 ratio x 4 (AVX-512 has 16 fp32 lanes, NEON 4: a matrix-vector-bound kernel loses less of
# the GEMM rate on the narrower unit): an ASSUMPTION.
LSTM_EFFICIENCY = {"x86": 0.059, "arm": 0.24}
SPEECH_LSTM = ("edgekit's speech model (tflite fused LSTM, 61 steps, 1.62 M LSTM MACs) measured with "
               "`edgekit bench --threads 1 --runs 300` (bare invoke p50) on the 2-core x86-64 host, "
               "ai-edge-litert 2.3.0: fp32 0.222 ms, dynamic 0.193 ms, int8 1.475 ms")
DTYPE_SPEEDUP_ARM = {"default": {"fp32": 1.0, "fp16": 1.0, "dynamic": 1.0, "int8": 2.5, "int16x8": 1.0},
                     "lstm": {"int8": 1.5}}
DTYPE_SPEEDUP_X86 = {"default": {"fp32": 1.0, "fp16": 1.0, "dynamic": 0.33, "int8": 2.1, "int16x8": 1.0},
                     "lstm": {"int8": 0.15, "dynamic": 1.15}}
FORMAT_FACTOR = {"tflite": 1.0, "onnx": 1.1}
UNCERTAINTY = {"calibrated": 1.25, "dtype": 1.6, "lstm": 2.0, "format": 1.3}
NOTES = "docs/conversion-facts.md"
LITERT_PTQ = "https://ai.google.dev/edge/litert/models/post_training_quantization"
SOURCES = {
    "gmacs_per_core": (
        "conv and dense: fitted (relative least squares) to XNNPACK's published Raspberry Pi 4 / 3+ / 2 "
        "latencies of MobileNet v1, v2, v3 Large and v3 Small (fp32, 4 threads; " + XNNPACK_README + "), "
        "with MACs counted by edgekit on keras.applications builds of the same models, then divided by "
        "the 4-thread speed-up; depthwise: no MAC term (the fit prices it by the bytes it moves); lstm: "
        "x86 0.059 x the conv rate, measured (" + SPEECH_LSTM + "); ARM 0.24 x the conv rate, an "
        "ASSUMPTION: the x86 ratio x 4 (16 AVX-512 fp32 lanes vs 4 NEON lanes; batch-1 LSTM steps are "
        "matrix-vector products that gain little from wide vectors); no published Raspberry Pi LSTM figure"),
    "gbytes_per_s_per_core": "fitted with gmacs_per_core (bytes = weights + activations each op reads and writes)",
    "op_overhead_us": "fitted with gmacs_per_core (per-op dispatch and thread synchronisation, not thread-scaled)",
    "parallel_fraction": (
        "ASSUMPTION: 0.9 (Amdahl) for every class but lstm; XNNPACK's Pixel 3a MobileNet v2 figures (55 ms "
        "single-threaded, 28 ms multi-threaded on 2 big cores; README 'Mobile phones') imply 0.98 on 2 cores, "
        "a 4-core Pi shares one memory bus; lstm 0.0: LiteRT's batch-1 LSTM kernel is not split across threads"),
    "dtype_speedup": (
        "int8: ASSUMPTION 2.5x on the MAC term (LiteRT's post-training quantization guide: full integer "
        "'3x+ speedup' on CPU, " + LITERT_PTQ + "; measured here on x86: MobileNetV2 3.2 -> 1.5 ms, 2.1x, "
        + NOTES + "); fp16: 1.0, CPU kernels dequantize fp16 weights to fp32 at load (same guide); "
        "dynamic: 1.0 on ARM (the guide claims 2-3x, yet on x86 we measured 3x SLOWER), x86 0.33 measured; "
        "lstm int8: ARM 1.5 ASSUMPTION (NEON integer LSTM kernels), x86 0.15 measured (LiteRT's integer "
        "LSTM uses portable scalar code on x86; " + SPEECH_LSTM + "; also 0.43 vs 0.08 ms and 28.4 vs "
        "9.1 ms in " + NOTES + "); lstm dynamic: x86 1.15 measured (same), ARM 1.0"),
    "format_factor": ("onnx: 1.1x the TFLite time (measured on x86: MobileNetV2 fp32 ONNX 3.5 ms vs TFLite "
                      "3.2 ms, " + NOTES + "; onnxruntime's MLAS kernels on ARM are not calibrated)"),
    "uncertainty": (
        "calibrated: 1.25, the 25% target (held-out error of the fp32 fit: see calibration.held_out); "
        "dtype 1.6 and lstm 2.0: the spread of the assumptions above; format 1.3: ONNX on ARM unmeasured"),
}


def _speedup4() -> float:
    return thread_speedup(PUBLISHED_THREADS, PARALLEL_FRACTION["default"])


def cost_models(work: dict[str, dict] | None = None) -> dict[str, dict]:
    """The `cost_model` object of every profile, from the pooled fit (see docs/estimates.md)."""
    work = work or REFERENCE_WORK
    rows = [(d, m, ms) for d, table in PUBLISHED_MS.items() for m, ms in table.items()]
    theta, scale = fit(rows, work)
    held = held_out_errors(work)
    s4 = _speedup4()
    base = {"conv": 1e-9 / theta[0] / s4 if theta[0] else None,
            "depthwise": 1e-9 / theta[1] / s4 if theta[1] else None,
            "gbytes": 1e-9 / theta[2] / s4 if theta[2] else None,
            "overhead_us": theta[3] * 1e6}
    held_summary = {k: {"mean_abs_error": v["mean_abs_error"], "max_abs_error": v["max_abs_error"],
                        "figures": len(v["rows"])} for k, v in held.items()}
    # 1-thread rpi4-scale prediction of MobileNet v2, to anchor boards with a single published figure.
    v2_one_thread = _model_ms(base, 1.0, work["mobilenet_v2"], threads=1)
    anchors = {
        "rpi4": (scale["rpi4"], "one fit over the Pi 4, 3+ and 2 figures (shared per-class costs, a speed "
                 "scale per board), Pi 4 scale"),
        "rpi3-armv7": (scale["rpi3plus"], "the same fit, Pi 3+ scale (the published boards ran 32-bit "
                       "Raspbian, like this profile)"),
        "rpi5": (scale["rpi4"] / 2.5, "NO published figure: the Raspberry Pi 4 model / 2.5 (Raspberry Pi Ltd: "
                 "'a 2-3x increase in CPU performance relative to Raspberry Pi 4', "
                 "https://www.raspberrypi.com/news/introducing-raspberry-pi-5/)"),
        "android-arm64": (55.0 / v2_one_thread, "scale fitted on XNNPACK's Pixel 3a MobileNet v2 figure (55 ms, "
                          "1 thread); its 2-thread figure (28 ms) is held out"),
        "x86_64-host": (3.2 / v2_one_thread, "scale fitted on edgekit's own x86 measurement of MobileNetV2 fp32 "
                        "(3.2 ms, 1 thread, " + NOTES + "); its 2-thread figure (1.6 ms) is held out; the "
                        "int8 speed-up (2.1x) comes from its int8 figure (1.5 ms)"),
    }
    models = {}
    for name, (device_scale, how) in anchors.items():
        rates = {k: _sig(base[k] / device_scale) for k in ("conv",) if base[k]}
        rates["dense"] = rates["conv"]
        if base["depthwise"]:
            rates["depthwise"] = _sig(base["depthwise"] / device_scale)
        rates["lstm"] = _sig(rates["conv"] * LSTM_EFFICIENCY["x86" if name == "x86_64-host" else "arm"])
        models[name] = {
            "basis": f"fp32 fitted to published MobileNet latencies, {how}; held-out error "
                     f"{100 * held['leave_one_out']['mean_abs_error']:.0f}% mean, "
                     f"{100 * held['leave_one_out']['max_abs_error']:.0f}% max (leave-one-out)",
            "gmacs_per_core": rates,
            "gbytes_per_s_per_core": _sig(base["gbytes"] / device_scale),
            "op_overhead_us": _sig(base["overhead_us"] * device_scale),
            "parallel_fraction": dict(PARALLEL_FRACTION),
            "dtype_speedup": json.loads(json.dumps(DTYPE_SPEEDUP_X86 if name == "x86_64-host"
                                                   else DTYPE_SPEEDUP_ARM)),
            "format_factor": dict(FORMAT_FACTOR),
            "uncertainty": dict(UNCERTAINTY, calibrated=1.6 if name == "rpi5" else UNCERTAINTY["calibrated"]),
            "calibration": {"scale_vs_rpi4": round(device_scale, 4), "how": how, "held_out": held_summary,
                            "published": PUBLISHED_MS.get({"rpi4": "rpi4", "rpi3-armv7": "rpi3plus"}.get(name, ""),
                                                          {}),
                            "source": XNNPACK_README},
            "sources": dict(SOURCES),
        }
    if "rpi5" in models:
        models["rpi5"]["sources"]["uncertainty"] += "; rpi5 calibrated band 1.6: no Pi 5 figure, the 2-3x claim"
    if "x86_64-host" in models:
        models["x86_64-host"]["sources"]["uncertainty"] += (
            "; x86: tiny int8 models ran up to 18x slower than this model estimates (per-op costs; "
            "docs/estimates.md): on the host, measure instead")
    return models


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def _model_ms(base: dict, scale: float, features: dict, threads: int) -> float:
    s = thread_speedup(threads, PARALLEL_FRACTION["default"])
    seconds = features["conv"] / (base["conv"] * 1e9 * s) + features["bytes"] / (base["gbytes"] * 1e9 * s)
    if base["depthwise"]:
        seconds += features["dw"] / (base["depthwise"] * 1e9 * s)
    return 1000.0 * scale * (seconds + features["ops"] * base["overhead_us"] * 1e-6)


# `python -m edgekit.devices.estimate --calibrate [--write] [--recount DIR]` -------------------------

BUILD_REFERENCE = r'''
import os, sys
import keras, tensorflow as tf
out = sys.argv[1]
apps = keras.applications
builders = {
    "mobilenet_v1": lambda: apps.MobileNet(input_shape=(224, 224, 3), weights=None),
    "mobilenet_v2": lambda: apps.MobileNetV2(input_shape=(224, 224, 3), weights=None),
    "mobilenet_v3_large": lambda: apps.MobileNetV3Large(input_shape=(224, 224, 3), weights=None,
                                                        include_preprocessing=False),
    "mobilenet_v3_small": lambda: apps.MobileNetV3Small(input_shape=(224, 224, 3), weights=None,
                                                        include_preprocessing=False),
}
for name, build in builders.items():
    model = build()
    saved = os.path.join(out, name + "_saved")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((1, 224, 224, 3), tf.float32)])
    archive.write_out(saved, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
    with open(os.path.join(out, name + ".tflite"), "wb") as f:
        f.write(converter.convert())
    print(name, flush=True)
'''


def recount(folder: str | Path) -> dict[str, dict]:
    """Build and convert the four MobileNets in a child process (TensorFlow; minutes), then count them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(BUILD_REFERENCE)
    try:
        subprocess.run([sys.executable, script.name, str(folder)], env=env, check=True)
    finally:
        os.unlink(script.name)
    return {name: reference_features(count_work(folder / f"{name}.tflite")) for name in PUBLISHED_MS["rpi4"]}


def write_profiles(models: dict[str, dict]) -> list[str]:
    """Replace `cost_model` in each profile file (atomically), keeping everything else."""
    from edgekit.core import atomic_write_text

    written = []
    for name, model in models.items():
        path = profiles.profile_dir() / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        data["cost_model"] = model
        problems = profiles.validate(data)
        if problems:
            raise UserError(f"{path}: {'; '.join(problems)}")
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> int:
    from edgekit.runtime.commandline import ArgumentParser

    parser = ArgumentParser(prog="python -m edgekit.devices.estimate",
                            description="Calibrate the latency cost model on published figures.")
    parser.add_argument("--calibrate", action="store_true", required=True)
    parser.add_argument("--recount", metavar="DIR", help="rebuild and recount the MobileNets in DIR (minutes)")
    parser.add_argument("--write", action="store_true", help="write cost_model into the profile files")
    args = parser.parse_args(argv)
    work = REFERENCE_WORK
    if args.recount:
        work = recount(args.recount)
        print("REFERENCE_WORK = " + json.dumps(work, indent=4))
    held = held_out_errors(work)
    print("| board | model | published (ms) | estimate (ms) | error | held out by |")
    print("|---|---|---:|---:|---:|---|")
    for scheme, table in held.items():
        for r in table["rows"]:
            print(f"| {r['device']} | {r['model']} | {r['published_ms']:g} | {r['estimate_ms']:g} "
                  f"| {100 * r['error']:+.1f}% | {scheme} |")
    for scheme, table in held.items():
        print(f"{scheme}: mean |error| {100 * table['mean_abs_error']:.1f}%, max {100 * table['max_abs_error']:.1f}% "
              f"over {len(table['rows'])} figures")
    models = cost_models(work)
    for name, model in models.items():
        print(f"{name}: conv {model['gmacs_per_core']['conv']} GMAC/s/core, "
              f"{model['gbytes_per_s_per_core']} GB/s/core, {model['op_overhead_us']} us/op "
              f"(scale vs rpi4 {model['calibration']['scale_vs_rpi4']})")
    if args.write:
        for path in write_profiles(models):
            print(f"wrote {path}")
    return 0


