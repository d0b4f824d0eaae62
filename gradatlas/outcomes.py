"""What a run's outcome can be, defined once: its status, and its gradient-health verdict.

Light on purpose (no Keras, no JAX): the engine, the diagnostics, the analysis and the report import it.

The verdict of a run, at initialization (first probe) and after training (last probe), is one class
of `HEALTH_CLASSES`, taken from every diagnostic in this order (the first that applies wins, so a
run is named by its most severe problem, and a cause before its symptom):

1. diverged   the run diverged (after training), or the probe saw a non-finite network.
2. exploding  delta ratio (delta_rms layer 1 / delta_rms output layer) above FLOW_EXPLODING_ABOVE:
              the error signal grows by more than 10x on its way back (He et al. 2015, sec. 2.2).
3. saturated  saturating activations (sigmoid, tanh, ELU, SELU, GELU): at least SATURATED_AT_LEAST of
              the hidden (sample, unit) pairs sit where the derivative is below 5% of its maximum
              (Glorot & Bengio 2010, sec. 3: saturated sigmoid units stall learning).
4. dead       ReLU family: at least DEAD_AT_LEAST of the hidden units have a zero derivative on every
              probe sample (dying ReLU; Maas et al. 2013, He et al. 2015).
5. vanishing  delta ratio below FLOW_VANISHING_BELOW: the first layer gets a tenth of the signal
              or less (Glorot & Bengio 2010, He et al. 2015).
6. healthy    none of the above.

Saturation and dead units come before vanishing because they cause it: a saturated network's
ratio can still look fine (random_normal + sigmoid: 0.2) while it cannot learn. docs/verdicts.md
gives the known-answers panel that sets these thresholds, with each case's measured margin.
"""

from __future__ import annotations

import math

STATUSES = ("converged", "stalled", "diverged")
# gradient flow from the output layer back to layer 1: delta_rms(layer 1) / delta_rms(output)
FLOW_VANISHING_BELOW = 0.1
FLOW_EXPLODING_ABOVE = 10.0
SATURATED_AT_LEAST = 0.2  # mean share of saturated (sample, unit) pairs over the hidden layers
DEAD_AT_LEAST = 0.5  # mean share of dead units over the hidden layers
HEALTH_CLASSES = ("healthy", "vanishing", "exploding", "saturated", "dead", "diverged")
HEALTH_WHEN = ("init", "final")  # first probe (before any update), last probe
UNIT_FRACTIONS = ("saturated_frac", "inactive_frac", "dead_frac")
# the run measures derived from the diagnostics (diagnostics.run_measures, the one place), in run.json
RUN_MEASURES = (
    *(f"vanishing_ratio_{when}" for when in HEALTH_WHEN),
    *(f"{name}_{when}" for when in (*HEALTH_WHEN, "epoch1") for name in UNIT_FRACTIONS),
    *(f"health_{when}" for when in HEALTH_WHEN),
)
# which measures each class reads, for the report's explanations
HEALTH_RULES = {
    "healthy": "none of the problems below",
    "vanishing": f"delta ratio < {FLOW_VANISHING_BELOW:g}",
    "exploding": f"delta ratio > {FLOW_EXPLODING_ABOVE:g}",
    "saturated": f"≥ {SATURATED_AT_LEAST:.0%} of hidden (sample, unit) pairs saturated (saturating activations)",
    "dead": f"≥ {DEAD_AT_LEAST:.0%} of hidden units dead on every probe sample (ReLU family)",
    "diverged": "the run diverged, or the network is not finite",
}


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def health_class(ratio, saturated=math.nan, dead=math.nan, diverged: bool = False) -> str | None:
    """The verdict of one run at one probe (see the module's docstring); None without a delta ratio.

    `ratio`: delta ratio; `saturated`, `dead`: mean shares over the hidden layers (NaN where the
    activation family does not define them); `diverged`: the run diverged or the probe was not finite.
    A ratio of 0 (no signal reaches layer 1) counts as vanishing.
    """
    if diverged:
        return "diverged"
    ratio, saturated, dead = _number(ratio), _number(saturated), _number(dead)
    if math.isnan(ratio) or ratio < 0:
        return None
    if ratio > FLOW_EXPLODING_ABOVE:  # an infinite ratio too
        return "exploding"
    if saturated >= SATURATED_AT_LEAST:
        return "saturated"
    if dead >= DEAD_AT_LEAST:
        return "dead"
    if ratio < FLOW_VANISHING_BELOW:
        return "vanishing"
    return "healthy"


def bn_moving_average_left(momentum: float, steps: int) -> float:
    """Share of batch normalization's initial moving averages (mean 0, variance 1) still in them
    after `steps` updates with `momentum` (Keras: new = momentum * old + (1 - momentum) * batch)."""
    return float(momentum) ** max(int(steps), 0)


# A BN run evaluates with its moving averages; with more than this share of (0, 1) left in them it
# is evaluated on statistics that are not yet its own (Ioffe & Szegedy 2015, sec. 3.1).
BN_UNSETTLED_ABOVE = 0.05


def bn_steps_needed(momentum: float) -> int:
    """Updates until the moving averages keep at most BN_UNSETTLED_ABOVE of their initial values."""
    if not 0 < momentum < 1:
        return 0
    return math.ceil(math.log(BN_UNSETTLED_ABOVE) / math.log(momentum))
