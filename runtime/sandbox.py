"""Probe an untrusted model file in a child process before loading it in this one.

A malformed .tflite/.onnx file can crash a LiteRT or onnxruntime kernel (segfault, abort) and take the
whole process with it. A file that edgekit did not produce and hash (a bare model path, a bundle
without a manifest) is therefore first loaded and run once on a synthetic input in a child process:
if the child dies or fails, the caller gets a one-line `ModelFileError` and survives.

The child reads the model bytes from stdin (the same bytes the parent then loads, so the file cannot
change between probe and load) and prints the runner's description as JSON.

    python -m edgekit.runtime.sandbox FORMAT BACKEND NAME SETTINGS_JSON  < model bytes
"""

from __future__ import annotations

import json
import sys

from edgekit.runtime import child
from edgekit.runtime.errors import ModelFileError

PROBE_TIMEOUT_S = 120.0


def probe(model: bytes, fmt: str, backend: str | None, name: str, settings=None,
          timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Load and run `model` once in a child process; returns the runner's description. Raises
    ModelFileError when the child crashes, hangs, or rejects the file."""
    settings_json = json.dumps(settings.to_dict() if settings is not None else {})
    try:
        return child.run(child_command(fmt, backend or "auto", name, settings_json), input=model, timeout=timeout,
                         what=f"probing {name} in a sandbox process")
    except child.ChildFailed as exc:
        if exc.crashed:
            raise ModelFileError(f"{name} crashed the {backend or fmt} backend ({exc.signal_name}) when probed "
                                 "in a child process: the file is corrupt or not a model edgekit can run") from None
        raise ModelFileError(str(exc)) from None


def child_command(fmt: str, backend: str, name: str, settings_json: str) -> list[str]:
    """The probe's command line (tests replace it with one that crashes)."""
    return [sys.executable, "-m", "edgekit.runtime.sandbox", fmt, backend, name, settings_json]


def _probe_in_child(argv: list[str]) -> dict:
    from edgekit.runtime.backends import create_runner
    from edgekit.runtime.settings import RuntimeSettings
    from edgekit.runtime.synthetic import synthetic_inputs

    fmt, backend, name, settings_json = argv
    model = sys.stdin.buffer.read()
    settings = RuntimeSettings(**json.loads(settings_json))
    runner = create_runner(fmt, model, settings=settings, backend=None if backend == "auto" else backend, name=name)
    try:
        runner.run(synthetic_inputs(runner.inputs, raw=True))
        return runner.describe()
    finally:
        runner.deactivate()


if __name__ == "__main__":
    sys.exit(child.child_main(lambda: _probe_in_child(sys.argv[1:])))
