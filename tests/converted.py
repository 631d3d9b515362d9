"""Reading and running a converted model file in tests, as a device does (the runtime's graph reader and
runner, default kernels), for the tests that convert with export's functions directly instead of bundles."""

from __future__ import annotations

from pathlib import Path

from edgekit.runtime import formats


def describe(path: Path) -> dict:
    """inputs, outputs, op records and op histogram, read from the file itself."""
    path = Path(path)
    return formats.by_suffix(path).read_graph(path.read_bytes()).describe()


def run(path: Path, x, input_names=None):
    """Float outputs of a converted file on `x`: one array, a dict input name -> array, or a list of arrays
    in the order of `input_names` (the Keras model's input names; the file's own order may differ)."""
    from edgekit.runtime.model import load_converted

    details = describe(path)
    if isinstance(x, (list, tuple)):
        x = dict(zip(input_names, x, strict=True))
    with load_converted(Path(path), {"inputs": details["inputs"], "outputs": details["outputs"]}) as model:
        return model.predict_tensors(x)
