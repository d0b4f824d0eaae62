"""Initialization at depth (He et al. 2015, transferred to MLPs), from the main grid's tables.

The preset's grid is a deep ReLU MLP with he_normal and glorot_uniform. For ReLU, a layer whose
weights have variance c/fan_in multiplies the activations' second moment by c/2: He (c = 2) keeps
the forward std constant, Glorot on square layers (c = 1) halves the variance per layer, so the
std of hidden layer L over that of layer 1 is predicted 2^(-(L-1)/2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PREDICTED_GAIN = {
    "he_normal": 1.0,
    "he_uniform": 1.0,
    "glorot_uniform": 0.5,
    "glorot_normal": 0.5,
}  # variance per layer


def std_profile(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Forward activation std per hidden layer at init (step 0), one row per (initializer, seed, layer)."""
    d = diagnostics[(diagnostics["step"] == 0) & (diagnostics["layer_kind"] == "hidden")]
    return (
        d[["initializer", "seed", "layer", "act_std"]]
        .drop_duplicates(["initializer", "seed", "layer"])
        .reset_index(drop=True)
    )


def assess(
    runs: pd.DataFrame,
    diagnostics: pd.DataFrame,
    ratio_factor: float = 3.0,
    slower_factor: float = 2.0,
    accuracy_gap: float = 0.1,
) -> dict:
    """Verdict: (1) per initializer, std(layer L)/std(layer 1) at init (geometric mean over seeds)
    is within `ratio_factor` of (predicted variance gain)^((L-1)/2); (2) He trains (status
    converged for every seed) while Glorot stalls, or is far slower: it needs >= `slower_factor` times
    He's epochs to the target accuracy (never reaching it counts), or its mean test accuracy
    is lower by more than `accuracy_gap`."""
    prof = std_profile(diagnostics)
    depth = int(prof["layer"].max())
    forward = {}
    for init, g in prof.groupby("initializer"):
        per_seed = g.pivot_table(index="seed", columns="layer", values="act_std")
        ratio = float(np.exp(np.mean(np.log(per_seed[depth] / per_seed[1]))))
        predicted = PREDICTED_GAIN.get(init, math.nan) ** ((depth - 1) / 2)
        forward[init] = {
            "ratio": ratio,
            "predicted": predicted,
            "ok": bool(abs(math.log(ratio / predicted)) <= math.log(ratio_factor)),
        }
    by = runs.groupby("initializer")
    training = by.agg(
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"),
        best_val_accuracy=("best_val_accuracy", "mean"),
        converged=("status", lambda s: int((s == "converged").sum())),
        seeds=("seed", "nunique"),
        train_seconds=("train_seconds", "mean"),
    ).reset_index()
    epochs_cap = runs["epochs_run"].max() + 1
    runs = runs.assign(_ett=runs["epochs_to_target"].astype(float).fillna(epochs_cap))
    training["epochs_to_target"] = training["initializer"].map(runs.groupby("initializer")["_ett"].mean())
    t = training.set_index("initializer")
    he = next(i for i in t.index if i.startswith("he_"))
    glorot = next(i for i in t.index if i.startswith("glorot_"))
    he_trains = bool(t.loc[he, "converged"] == t.loc[he, "seeds"])
    glorot_stalls = bool(t.loc[glorot, "converged"] == 0)
    glorot_slower = bool(
        t.loc[glorot, "epochs_to_target"] >= slower_factor * t.loc[he, "epochs_to_target"]
        or t.loc[he, "test_accuracy"] - t.loc[glorot, "test_accuracy"] > accuracy_gap
    )
    training_ok = he_trains and (glorot_stalls or glorot_slower)
    forward_ok = all(v["ok"] for v in forward.values())
    return {
        "depth": depth,
        "forward": forward,
        "training": training,
        "he": he,
        "glorot": glorot,
        "he_trains": he_trains,
        "glorot_stalls": glorot_stalls,
        "glorot_slower": glorot_slower,
        "training_ok": training_ok,
        "forward_ok": forward_ok,
        "reproduced": training_ok and forward_ok,
        "profile": prof,
        "seeds": int(runs["seed"].nunique()),
    }
