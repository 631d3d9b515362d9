"""Keras layers of a model and of a converted graph's ops (host side, no TensorFlow needed here).

TensorFlow op and tensor names carry the Keras layer scopes (`functional_1/lstm_1/...`,
`model/lstm/...`), so an op's tensor names are matched against the model's layer names (Keras 3
appends `_1` to scope names, which is stripped): the op check names the layer an op came from, and
keep-float recipes find a layer's ops in either format.
"""

from __future__ import annotations

import re

_SCOPE_SUFFIX = re.compile(r"_\d+$")


def keras_layer_classes(model) -> dict[str, str]:
    """Every layer (nested models included) by name -> class name."""
    found: dict[str, str] = {}

    def walk(m):
        for layer in m.layers:
            found[layer.name] = type(layer).__name__
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return found


def keras_layer_names(model) -> set[str]:
    return set(keras_layer_classes(model))


def layers_of(names: list[str], layer_names: set[str]) -> list[str]:
    """Keras layers named in op/tensor `names` ("a/b/c;d/e" parts), innermost scope first per name."""
    found: list[str] = []
    for name in names:
        for part in str(name).split(";"):
            hits = []
            for scope in part.split("/"):
                scope = scope.split(":")[0]
                for candidate in (scope, _SCOPE_SUFFIX.sub("", scope)):
                    if candidate in layer_names:
                        hits.append(candidate)
                        break
            if hits and hits[-1] not in found:
                found.append(hits[-1])
    return found
