"""Statistics the analysis reports, on scipy and statsmodels, and how their numbers are printed.

Intervals are 95% t-intervals: one-sample (mean ± t(0.975, n-1)·s/√n) or Welch's for a difference of
two means. With fewer than two values an interval is NaN and prints "n/a"; every printed interval
carries its n (`format_estimate`). Times to an event (epochs to a target) use Kaplan-Meier, misses
censored.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight

CI_LEVEL = 0.95


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _interval(test) -> tuple[float, float]:
    # identical values (e.g. every seed healthy) make scipy warn about precision; the interval is the point
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        ci = test().confidence_interval(CI_LEVEL)
    return float(ci.low), float(ci.high)


def t_interval(values) -> tuple[float, float]:
    """95% t-interval of the mean of the finite `values`; (NaN, NaN) with fewer than two of them."""
    values = _finite(values)
    if values.size < 2:
        return np.nan, np.nan
    return _interval(lambda: stats.ttest_1samp(values, 0.0))


def welch_interval(a, b) -> tuple[float, float]:
    """95% Welch t-interval of mean(a) - mean(b); NaN unless both have two finite values."""
    a, b = _finite(a), _finite(b)
    if a.size < 2 or b.size < 2:
        return np.nan, np.nan
    return _interval(lambda: stats.ttest_ind(a, b, equal_var=False))


def mean(values) -> float:
    """Mean that is NaN (not a warning) for no values."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else np.nan


def nan_to(value, default):
    """`value`, or `default` where it is None or not finite."""
    return default if value is None or not np.isfinite(value) else value


def kaplan_meier(time, event) -> pd.DataFrame:
    """Kaplan-Meier estimate of P(target not yet reached after t epochs).

    `time` is the epoch of the event or of censoring, `event` True where the target was reached.
    Output columns: time (each distinct event time), n_at_risk, n_events, survival.
    """
    fit = SurvfuncRight(np.asarray(time, dtype=float), np.asarray(event, dtype=float))
    return pd.DataFrame(
        {
            "time": fit.surv_times,
            "n_at_risk": fit.n_risk,
            "n_events": fit.n_events.astype(int),
            "survival": fit.surv_prob,
        }
    )


def km_median(time, event) -> float:
    """Median time to event: first time survival <= 0.5, NaN if it never drops that far."""
    curve = kaplan_meier(time, event)
    below = curve.loc[curve["survival"] <= 0.5, "time"]
    return float(below.iloc[0]) if len(below) else np.nan


def format_ci(low, high, n, fmt: str = "+.3f", unit: str = "") -> str:
    """'95% CI a to b, n=N unit', or '95% CI n/a, n=N unit' when the interval is unavailable: never '+nan'."""
    n = int(n) if n is not None and np.isfinite(n) else 0
    count = f"n={n}{' ' + unit if unit else ''}"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"95% CI n/a, {count}"
    return f"95% CI {low:{fmt}} to {high:{fmt}}, {count}"


def format_estimate(mean, low, high, n, fmt: str = "+.3f", unit: str = "") -> str:
    """'mean (95% CI a to b, n=N unit)'; 'n/a (n=0)' without a value."""
    if mean is None or not np.isfinite(mean):
        n = int(n) if n is not None and np.isfinite(n) else 0
        return f"n/a (n={n}{' ' + unit if unit else ''})"
    return f"{mean:{fmt}} ({format_ci(low, high, n, fmt, unit)})"


def power_of_ten(log10_value: float) -> str:
    """10^x as text, e.g. '10^-2.5 (~316x smaller)'."""
    if not np.isfinite(log10_value):
        return "n/a"
    factor = 10 ** abs(log10_value)
    size = f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"
    if abs(log10_value) < 0.05:
        return f"10^{log10_value:+.1f} (unchanged)"
    return f"10^{log10_value:+.1f} (~{size}x {'smaller' if log10_value < 0 else 'larger'})"
