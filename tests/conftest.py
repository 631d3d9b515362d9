"""Shared fixtures: the real datasets in ../shared/data, and models trained on them once per session.

Parity tests need trained models (a random-weight model gives near-uniform outputs that any
variant matches), so the session trains each kind once with quick settings and shares it.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# tests/bundles.py provides the `rt_bundles` fixture (tiny models, trained and converted once).
pytest_plugins = ["bundles"]

# Fixtures that train or convert: a test using any of them is slow by definition, so that
# `make test-fast` (-m "not slow") trains and converts nothing, whatever its author remembered.
TRAINING_FIXTURES = {"rt_bundles", "trained_dir", "exports", "exported_dir", "tiny"}


# `make test` runs on two pytest-xdist workers (--dist loadgroup). Tests sharing an expensive fixture
# must run in one worker, or each worker would train and convert it again: fixture -> group.
SHARED_FIXTURE_GROUPS = {"trained_dir": "models", "exports": "models", "exported_dir": "models",
                         "rt_bundles": "rt-bundles", "device_bundles": "device-bundles"}
MODEL_TASKS = ("image", "speech", "text")  # the real-data models, longest to train and convert first
# The real-data models are one group per task ("models-image", ...), so the image model (about 10 minutes
# of training, conversion and emulation) and the other two build in parallel; a test's task is its
# `task` parameter, else the task named literally in its source or its fixtures' (`exported_dir("speech")`).
# A test naming none or several stays in the group "models" (correct anyway: a worker trains what it lacks).
TASK_LITERAL = re.compile(r'\(\s*"(' + "|".join(MODEL_TASKS) + r')"')
# Handed out first (with --no-loadscope-reorder): the real-data model groups, then tests by their measured
# `cost` mark, longest first (a 7-minute test started last ends the run alone), then the other slow tests,
# then the quick ones.
FIRST = tuple(f"models-{task}" for task in MODEL_TASKS) + ("models",)


def _model_task(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec and callspec.params.get("task") in MODEL_TASKS:
        return callspec.params["task"]
    functions = [item.function]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        if defs and getattr(defs[-1].func, "__module__", "") == item.module.__name__:
            functions.append(defs[-1].func)
    found = set()
    for function in functions:
        try:
            found.update(TASK_LITERAL.findall(inspect.getsource(function)))
        except (OSError, TypeError):
            return None
    return found.pop() if len(found) == 1 else None


def _group(item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    for fixture, group in SHARED_FIXTURE_GROUPS.items():
        if fixture in names:
            task = _model_task(item) if group == "models" else None
            return f"{group}-{task}" if task else group
    # A module-scoped fixture is built once per worker that runs one of the module's tests.
    info = getattr(item, "_fixtureinfo", None)
    for name in names:
        defs = info.name2fixturedefs.get(name) if info else None
        if defs and defs[-1].scope == "module":
            return item.path.name
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the group marks into node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item):
        group = _group(item)
        cost = item.get_closest_marker("cost")
        return (FIRST.index(group) if group in FIRST else len(FIRST), -(cost.args[0] if cost else 0),
                item.get_closest_marker("slow") is None)

    items.sort(key=rank)  # stable: the file order within each rank


def _dataset(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real dataset {path} is absent (tests use ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def sms_spam() -> Path:
    return _dataset("sms_spam/sms_spam.tsv")


@pytest.fixture(scope="session")
def fsdd() -> Path:
    return _dataset("fsdd")


@pytest.fixture(scope="session")
def cifar10_small() -> Path:
    return _dataset("cifar10_small")


# Quick training settings: enough for confident outputs, small enough for a 20-minute suite. The image
# model keeps 64 px on CIFAR photos (--quick's 48 px, chosen for the embedded shapes, gives a model on
# CIFAR too indecisive for parity tests: 0.40 accuracy with a 0.10 confidence margin after 10 epochs).
QUICK_TRAINING = {
    "text": {"epochs": 3},
    "speech": {"epochs": 8},
    "image": {"epochs": 10, "input_size": 64},
}


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    """A factory: trained_dir("text") trains (once per session) on the real dataset and returns the
    model directory."""
    from edgekit.train import train_model

    cache: dict[str, Path] = {}
    sources = {"text": "sms_spam/sms_spam.tsv", "speech": "fsdd", "image": "cifar10_small"}

    def get(task: str) -> Path:
        if task not in cache:
            data = _dataset(sources[task])
            out = tmp_path_factory.mktemp(f"model-{task}") / task
            cache[task] = train_model(task, out=out, data=str(data), seed=0, quick=True,
                                      **QUICK_TRAINING[task])
        return cache[task]

    return get


@pytest.fixture(scope="session")
def exports(tmp_path_factory, trained_dir):
    """A factory: exports("text") exports every format and variant of the trained model once per
    session and returns (bundles folder, export results, seconds)."""
    from edgekit.export import export_model

    cache: dict[str, tuple] = {}

    def get(task: str):
        if task not in cache:
            out = tmp_path_factory.mktemp(f"bundles-{task}")
            start = time.perf_counter()
            results = export_model(trained_dir(task), out)
            cache[task] = (out, results, time.perf_counter() - start)
        return cache[task]

    return get


@pytest.fixture(scope="session")
def exported_dir(exports):
    """A factory: exported_dir("text") -> the folder of every bundle of the trained text model."""
    return lambda task: exports(task)[0]
