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
import signal
import subprocess
import sys

from edgekit.runtime.errors import EdgekitError, ModelFileError, first_line, last_line

PROBE_TIMEOUT_S = 120.0


def probe(model: bytes, fmt: str, backend: str | None, name: str, settings=None,
          timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Load and run `model` once in a child process; returns the runner's description. Raises
    ModelFileError when the child crashes, hangs, or rejects the file."""
    settings_json = json.dumps(settings.to_dict() if settings is not None else {})
    cmd = child_command(fmt, backend or "auto", name, settings_json)
    try:
        proc = subprocess.run(cmd, input=model, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelFileError(f"{name}: loading and running it once took over {timeout:.0f} s in a "
                             "sandbox process; refusing to load it") from None
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout.decode("utf-8").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ModelFileError(f"{name}: the sandbox probe printed no result") from None
    message = _last_line(proc.stderr)
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise ModelFileError(f"{name} crashed the {backend or fmt} backend ({sig}) when probed in a "
                             "child process: the file is corrupt or not a model edgekit can run")
    if proc.returncode == 2 and message:
        raise ModelFileError(message)  # the child's own one-line EdgekitError
    raise ModelFileError(f"{name}: sandbox probe failed (exit {proc.returncode}): {message or 'no message'}")


def child_command(fmt: str, backend: str, name: str, settings_json: str) -> list[str]:
    """The probe's command line (tests replace it with one that crashes)."""
    return [sys.executable, "-m", "edgekit.runtime.sandbox", fmt, backend, name, settings_json]


def _last_line(stderr: bytes) -> str:
    # backends log INFO lines ("Created TensorFlow Lite XNNPACK delegate"); prefer ours
    ours = [l for l in stderr.decode("utf-8", "replace").splitlines() if l.startswith("sandbox: ")]
    return last_line(ours[-1][len("sandbox: "):] if ours else stderr)


def _child(argv: list[str]) -> int:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash here must not leave core files
    except (ImportError, ValueError, OSError):
        pass
    fmt, backend, name, settings_json = argv
    model = sys.stdin.buffer.read()
    try:
        from edgekit.runtime.backends import create_runner
        from edgekit.runtime.settings import RuntimeSettings
        from edgekit.runtime.synthetic import synthetic_inputs

        settings = RuntimeSettings(**json.loads(settings_json))
        runner = create_runner(fmt, model, settings=settings,
                               backend=None if backend == "auto" else backend, name=name)
        try:
            runner.run(synthetic_inputs(runner.inputs, raw=True))
            print(json.dumps(runner.describe()))
        finally:
            runner.deactivate()
    except EdgekitError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else the backend raised: still one line
        print(f"sandbox: {name}: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
