"""Parity and accuracy-after-quantization gates for exported bundles, per-layer int8 error, and
HTML/Markdown reports (host side).

    from edgekit.verify import verify_with_keras, verify_with_golden
    result = verify_with_keras("models/text", "artifacts/text")   # JSON-ready dict
    result["passed"], [(a["bundle"], a["passed"], a["reasons"]) for a in result["artifacts"]]

Importing this package loads neither TensorFlow nor Keras; only `verify_with_keras` does.
"""

from edgekit.verify.core import verify_with_golden, verify_with_keras
from edgekit.verify.gates import DEFAULT_GATES, Gate

__all__ = ["verify_with_keras", "verify_with_golden", "DEFAULT_GATES", "Gate"]
