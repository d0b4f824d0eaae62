"""What a run's outcome can be, defined once: its status, and the classes of its gradient flow.

Light on purpose (no Keras, no JAX): the engine, the diagnostics, the analysis and the report import it.
"""

from __future__ import annotations

import math

STATUSES = ("converged", "stalled", "diverged")
# gradient flow from the output layer back to layer 1: delta_rms(layer 1) / delta_rms(output)
FLOW_VANISHING_BELOW = 0.1
FLOW_EXPLODING_ABOVE = 10.0
FLOW_CLASSES = ("vanishing", "healthy", "exploding")


def flow_class(ratio) -> str | None:
    """vanishing / healthy / exploding by the thresholds above; None where the ratio is missing,
    not finite or not positive."""
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    if ratio < FLOW_VANISHING_BELOW:
        return FLOW_CLASSES[0]
    if ratio > FLOW_EXPLODING_ABOVE:
        return FLOW_CLASSES[2]
    return FLOW_CLASSES[1]
