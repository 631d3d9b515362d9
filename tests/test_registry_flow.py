"""A recipe registered by a test (per-tensor int8 weights: not one of edgekit's own) flows through
export, verify and the runtime with no other change: docs/design.md's claim that a new recipe is one
registration, proved on a briefly trained model (decisive outputs, so the gate means something)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.export import recipes


@pytest.fixture
def per_tensor_int8():
    recipe = recipes.register(recipes.Recipe(
        "int8pt", "int8", "int8", True, "int8 with one scale per weight tensor (a test's own recipe)",
        granularity="per_tensor"))
    yield recipe
    recipes.unregister("int8pt")


def _blobs_model(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    y = rng.integers(0, 4, 800)
    x = (centres[y] + rng.normal(0, 1, (800, 16))).astype(np.float32)
    model = keras.Sequential([keras.Input((16,), name="features"), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(4, activation="softmax", name="probs")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "blobs.keras")
    np.savez(tmp_path / "samples.npz", x=x[:300], y=y[:300])
    return tmp_path / "blobs.keras", tmp_path / "samples.npz", model, x[:300]


@pytest.mark.slow
@pytest.mark.cost(90)
def test_a_registered_recipe_flows_through_export_verify_and_the_runtime(tmp_path, per_tensor_int8, capsys):
    from edgekit import runtime
    from edgekit.export import export_model, formats
    from edgekit.runtime.cli import main as device_main
    from edgekit.verify import verify_with_keras

    model_path, samples, model, x = _blobs_model(tmp_path)
    out = tmp_path / "bundles"
    results = export_model(model_path, out, variants=["int8pt"], model_options={"calibration": str(samples)})
    assert {(r.format, r.status) for r in results} == {(f, "ok") for f in formats.NAMES}, [r.reason for r in results]
    for fmt in formats.NAMES:
        bundle = out / f"blobs-{fmt}-int8pt"
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["variant"] == "int8pt" and manifest["recipe"] == formats.recipe_name(fmt, per_tensor_int8)
        graph = formats.device(fmt).read_graph((bundle / manifest["model_file"]).read_bytes())
        # the recipe's data reached the converter: one scale per weight tensor, not one per output channel
        if graph.indexed:   # TFLite: the scales are the int8 weight tensors' own quantization
            weights = [t for t in graph.tensors.values() if t.constant and t.dtype == "int8" and len(t.shape) == 2]
            assert weights and all(len(t.quantization["scale"]) == 1 for t in weights), fmt
        else:               # ONNX QDQ: scales are initializers of their own (per channel: one per row)
            scales = [t for t in graph.tensors.values() if t.constant and t.name.endswith("_scale")]
            assert scales and all(int(np.prod(t.shape)) == 1 for t in scales), fmt

    golden = tmp_path / "golden.npz"
    result = verify_with_keras(model_path, out, data=str(samples), save_golden_to=golden, layer_debug=False)
    entries = {e["bundle"]: e for e in result["artifacts"]}
    assert set(entries) == {f"blobs-{f}-int8pt" for f in formats.NAMES}
    for entry in entries.values():   # judged by its recipe's family: the integer gate
        assert entry["passed"], entry["reasons"]
        assert entry["gate"]["min_agreement"] == 0.95 and entry["gate"]["max_accuracy_drop"] == 1.0
    assert "int8pt" in result["gates"]

    reference = np.argmax(model.predict(x, verbose=0), axis=-1)
    with runtime.load(out / "blobs-tflite-int8pt") as bundle:
        labels = np.argmax(bundle.predict_tensors(x), axis=-1)
    assert np.mean(labels == reference) >= 0.95
    assert device_main(["golden", str(out / "blobs-onnx-int8pt"), str(golden), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["tolerance"]["min_agreement"] == 0.95
