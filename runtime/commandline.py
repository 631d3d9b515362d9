"""What both command lines share (`python -m edgekit.runtime ...` on a device and `edgekit ...` on the
host): the argument parser's rules, the backend choices, and how a command ends (exit codes, one-line
errors). Below every module that declares flags, so none of them imports a command line."""

from __future__ import annotations

import argparse
import os
import sys

from edgekit.runtime.backends import BACKENDS
from edgekit.runtime.errors import EdgekitError, first_line

BACKEND_CHOICES = ("auto", *BACKENDS)   # the backend registry (runtime/backends), plus "auto"


class ArgumentParser(argparse.ArgumentParser):
    """argparse without abbreviations, for every parser and subparser of both CLIs: flags are a
    contract, so `--calibration` must never be read as `--calibration-samples`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_command(prog: str, command, debug: bool = False) -> int:
    """Run `command() -> exit code` the way both CLIs end: an EdgekitError (a user mistake, a bad
    input or model file) is one line and exit 2; an unexpected error is one line and exit 3 (with
    --debug, the traceback); Ctrl-C is 130; a closed output pipe (`| head`) ends quietly."""
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except EdgekitError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {first_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 3


def load_bundle(args, **extra):
    """runtime.load with a command's --backend, --threads, --device and --verbose."""
    from edgekit import runtime

    if getattr(args, "verbose", False):
        os.environ["EDGEKIT_BACKEND_LOGS"] = "1"  # read by the TFLite runners (and sandbox children)

    backend = getattr(args, "backend", None)
    return runtime.load(args.bundle, backend=None if backend in (None, "auto") else backend,
                        threads=getattr(args, "threads", None), device=getattr(args, "device", None), **extra)


def out(text: str) -> None:
    print(text, flush=True)
