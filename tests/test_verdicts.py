"""Gradient-health verdicts: the classes and their order, the one derivation from the diagnostics,
distinct networks at initialization, ties, the batch-norm caveat, and the known-answers panel
trained through the real pipeline (docs/verdicts.md)."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pandas as pd
import pytest

from conftest import make_workspace, run_snakemake, write_config
from gradatlas import analysis, diagnostics, outcomes
from gradatlas.config import FACTORS


# --- the classes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ratio, saturated, dead, diverged, expected",
    [
        (1.0, 0.0, 0.0, False, "healthy"),
        (0.05, 0.0, math.nan, False, "vanishing"),
        (0.0, math.nan, 0.1, False, "vanishing"),  # no signal reaches layer 1
        (50.0, 0.5, math.nan, False, "exploding"),  # the more severe problem names the run
        (0.2, 0.45, math.nan, False, "saturated"),  # random_normal + sigmoid: a fine ratio, a stalled net
        (0.05, 0.45, math.nan, False, "saturated"),  # the cause before its symptom
        (0.0, math.nan, 0.95, False, "dead"),  # dying ReLU: no signal because the units are dead
        (1.0, 0.0, 0.0, True, "diverged"),
        (math.nan, math.nan, math.nan, False, None),
    ],
)
def test_health_class_reads_every_diagnostic_in_order(ratio, saturated, dead, diverged, expected):
    assert outcomes.health_class(ratio, saturated, dead, diverged) == expected


def test_thresholds_are_the_documented_ones():
    assert outcomes.health_class(outcomes.FLOW_VANISHING_BELOW * 0.99) == "vanishing"
    assert outcomes.health_class(outcomes.FLOW_VANISHING_BELOW) == "healthy"
    assert outcomes.health_class(outcomes.FLOW_EXPLODING_ABOVE * 1.01) == "exploding"
    assert outcomes.health_class(1.0, outcomes.SATURATED_AT_LEAST) == "saturated"
    assert outcomes.health_class(1.0, outcomes.SATURATED_AT_LEAST - 0.01) == "healthy"
    assert outcomes.health_class(1.0, math.nan, outcomes.DEAD_AT_LEAST) == "dead"
    assert set(outcomes.HEALTH_RULES) == set(outcomes.HEALTH_CLASSES)


# --- the one derivation from the diagnostics ---------------------------------------------------------
def planted_diag(delta_first, delta_last, saturated=(0.0, 0.0), nan_last=False) -> pd.DataFrame:
    """Three probes (init, epoch 1, final) of a 2-hidden-layer network."""
    rows = []
    for step, phase, epoch, delta, sat in (
        (0, "init", 0.0, delta_first, saturated[0]),
        (10, "epoch", 1.0, delta_first, saturated[0]),
        (20, "epoch", 2.0, delta_last, saturated[1]),
    ):
        for layer, kind in ((1, "hidden"), (2, "hidden"), (3, "output")):
            bad = nan_last and step == 20
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "phase": phase,
                    "layer": layer,
                    "layer_kind": kind,
                    "units": 8,
                    "delta_rms": math.nan if bad else (delta[layer - 1]),
                    "saturated_frac": math.nan if bad or kind == "output" else sat,
                    "inactive_frac": math.nan,
                    "dead_frac": math.nan if bad or kind == "output" else 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_run_measures_derive_ratio_shares_and_verdicts_once():
    m = diagnostics.run_measures(
        planted_diag((0.001, 0.01, 1.0), (0.5, 0.8, 1.0), saturated=(0.0, 0.3)), diverged=False
    )
    assert list(m) == list(outcomes.RUN_MEASURES)
    assert m["vanishing_ratio_init"] == pytest.approx(0.001) and m["health_init"] == "vanishing"
    assert m["vanishing_ratio_final"] == pytest.approx(0.5) and m["saturated_frac_final"] == pytest.approx(0.3)
    assert m["health_final"] == "saturated"
    diverged = diagnostics.run_measures(planted_diag((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), nan_last=True), diverged=True)
    assert diverged["health_init"] == "healthy" and diverged["health_final"] == "diverged"
    assert math.isnan(diverged["vanishing_ratio_final"]) and math.isnan(diverged["saturated_frac_final"])


# --- distinct networks at initialization, ties ---------------------------------------------------------
def twin_runs() -> pd.DataFrame:
    """2 initializers x 2 optimizers x 3 regularizers x 3 seeds; the optimizer, l2 and dropout cannot act at
    init, so their runs carry the very same init values (as real runs do); batch_norm is a different network."""
    grid = pd.DataFrame(
        list(
            product(
                ["glorot_uniform", "he_normal"], ["sigmoid"], ["adam", "sgd"], ["none", "l2", "batch_norm"], range(3)
            )
        ),
        columns=[*FACTORS, "seed"],
    )
    rng = np.random.default_rng(0)
    net = {key: rng.normal(0, 0.1) for key in product(["glorot_uniform", "he_normal"], [False, True], range(3))}
    log_init = [
        (-3.0 if not bn else 0.0) + net[(i, bn, s)]
        for i, bn, s in zip(grid["initializer"], grid["regularizer"] == "batch_norm", grid["seed"])
    ]
    out = grid.assign(
        vanishing_ratio_init=10.0 ** np.array(log_init),
        vanishing_ratio_final=0.5,
        test_accuracy=0.9,
        best_val_accuracy=0.9,
        status="converged",
        epochs_run=2,
        epochs_to_target=np.nan,
    )
    for when in outcomes.HEALTH_WHEN:
        out[f"health_{when}"] = [outcomes.health_class(r) for r in out[f"vanishing_ratio_{when}"]]
    return out


def test_init_comparisons_count_each_network_once():
    runs = twin_runs()
    flow = analysis.gradient_flow_table(runs, FACTORS)
    init = flow[flow["when"] == "init"]
    assert "optimizer" not in set(init["factor"])  # cannot act before the first update: no ranking
    reg = init[init["factor"] == "regularizer"].set_index("level")
    assert set(reg.index) == {"none = l2", "batch_norm"}
    assert reg.loc["none = l2", "n"] == 6 and reg.loc["batch_norm", "n"] == 6  # 2 inits x 3 seeds, once each
    assert reg.loc["none = l2", "share_vanishing"] == 1.0 and reg.loc["batch_norm", "share_healthy"] == 1.0
    final = flow[(flow["when"] == "final") & (flow["factor"] == "regularizer")]
    assert final["n"].tolist() == [12, 12, 12]  # after training every run counts
    head = analysis.headline(runs, FACTORS)
    inert = head[(head["question"] == analysis.QUESTIONS["init"]) & (head["factor"] == "optimizer")].iloc[0]
    assert "no effect possible at initialization" in inert["sentence"] and pd.isna(inert["best"])
    bn = head[(head["question"] == analysis.QUESTIONS["init"]) & (head["factor"] == "regularizer")].iloc[0]
    assert bn["best"] == "batch_norm" and bn["n"] == 6 and "n=6 matched pairs" in bn["sentence"]
    board = analysis.leaderboard(runs, FACTORS, "flow_distance_init", k=10)
    cells = board[[*FACTORS]].apply(tuple, axis=1)
    assert cells.is_unique and set(board["optimizer"]) == {"adam = sgd"} and len(board) == 4


def test_equal_levels_are_a_tie_not_a_win():
    runs = twin_runs()
    runs["vanishing_ratio_final"] = 0.5  # both optimizers leave identical networks after training
    head = analysis.headline(runs, FACTORS)
    final = head[(head["question"] == analysis.QUESTIONS["final"]) & (head["factor"] == "optimizer")].iloc[0]
    assert final["tied"] and not final["keeps_alive"] and "a tie between adam and sgd" in final["sentence"]
    flow = analysis.gradient_flow_table(runs, FACTORS)
    opt = flow[(flow["when"] == "final") & (flow["factor"] == "optimizer")]
    assert opt["tied"].all() and (opt["rank"] == 1).all()


# --- batch-norm moving averages --------------------------------------------------------------------
def test_bn_runs_too_short_for_their_momentum_get_a_caveat():
    assert outcomes.bn_moving_average_left(0.99, 237) == pytest.approx(0.0925, abs=1e-3)  # the 10-layer case
    assert outcomes.bn_steps_needed(0.99) == 299 and outcomes.bn_steps_needed(0.9) == 29
    runs = twin_runs().assign(steps_per_epoch=100)
    text = " ".join(analysis.findings(runs, FACTORS, {}, {"bn_momentum": 0.99})["sentence"])
    assert "batch-norm runs trained fewer than 299 steps (the fewest 200)" in text and "13%" in text
    quiet = " ".join(
        analysis.findings(runs.assign(steps_per_epoch=200), FACTORS, {}, {"bn_momentum": 0.99})["sentence"]
    )
    assert "moving averages" not in quiet
    assert "moving averages" not in " ".join(analysis.findings(runs, FACTORS, {}, {"bn_momentum": 0.9})["sentence"])


# --- the known-answers panel, through the real pipeline ------------------------------------------------
PANEL = {
    "study": "panel",
    "data": {"train_subset": 4000, "validation_size": 1000},
    "model": {"width": 64},
    "train": {"epochs": 2},
    "diagnostics": {"probe_size": 500, "early_steps": [1, 10]},
    "grid": {
        "initializer": ["random_normal", "glorot_uniform", "he_normal", "lecun_normal"],
        "activation": ["sigmoid", "relu", "selu"],
        "optimizer": ["sgd"],
        "regularizer": ["none", "batch_norm"],
        "depth": [5, 16],
    },
    "seeds": [0],
}
LEARNING_RATES = {
    "study": "panel-lr",
    "data": {"train_subset": 4000, "validation_size": 1000},
    "model": {"width": 64, "depth": 5},
    "train": {"epochs": 2},
    "diagnostics": {"probe_size": 500, "early_steps": [1, 10]},
    "grid": {
        "initializer": ["he_normal"],
        "activation": ["relu"],
        "optimizer": ["adam"],
        "regularizer": ["none"],
        "learning_rate": [0.01, 0.1, 10.0],
    },
    "seeds": [0],
}
# (cell, when, expected verdict): docs/verdicts.md has the measured values
KNOWN_ANSWERS = [
    ({"initializer": "he_normal", "activation": "relu", "regularizer": "none", "depth": 5}, "init", "healthy"),
    (
        {"initializer": "glorot_uniform", "activation": "sigmoid", "regularizer": "none", "depth": 5},
        "init",
        "vanishing",
    ),
    (
        {"initializer": "glorot_uniform", "activation": "sigmoid", "regularizer": "none", "depth": 16},
        "init",
        "vanishing",
    ),
    ({"initializer": "random_normal", "activation": "relu", "regularizer": "none", "depth": 5}, "init", "exploding"),
    ({"initializer": "random_normal", "activation": "sigmoid", "regularizer": "none", "depth": 5}, "init", "saturated"),
    (
        {"initializer": "glorot_uniform", "activation": "sigmoid", "regularizer": "batch_norm", "depth": 5},
        "init",
        "healthy",
    ),
    (
        {"initializer": "glorot_uniform", "activation": "sigmoid", "regularizer": "batch_norm", "depth": 16},
        "init",
        "healthy",
    ),
    ({"initializer": "lecun_normal", "activation": "selu", "regularizer": "none", "depth": 16}, "init", "healthy"),
    # a Glorot variance halves through each ReLU layer; a sigmoid's slope is at most 1/4
    ({"initializer": "glorot_uniform", "activation": "relu", "regularizer": "none", "depth": 5}, "init", "vanishing"),
    ({"initializer": "he_normal", "activation": "sigmoid", "regularizer": "none", "depth": 5}, "init", "vanishing"),
    ({"learning_rate": 0.01}, "final", "healthy"),
    ({"learning_rate": 0.1}, "final", "dead"),  # dying ReLU under a too-high Adam rate
    ({"learning_rate": 10.0}, "final", "diverged"),
]
MARGIN = 1.5  # every measure sits at least this factor beyond (or inside) its threshold


def margin(row: pd.Series, when: str, expected: str) -> float:
    """How far the deciding measure is past the threshold that gives `expected` (>1: with room)."""
    ratio = row[f"vanishing_ratio_{when}"]
    if expected == "healthy":
        room = [ratio / outcomes.FLOW_VANISHING_BELOW, outcomes.FLOW_EXPLODING_ABOVE / ratio]
        room += [outcomes.SATURATED_AT_LEAST / v for v in [row[f"saturated_frac_{when}"]] if v > 0]
        room += [outcomes.DEAD_AT_LEAST / v for v in [row[f"dead_frac_{when}"]] if v > 0]
        return min(room)
    return {
        "vanishing": lambda: outcomes.FLOW_VANISHING_BELOW / ratio,
        "exploding": lambda: ratio / outcomes.FLOW_EXPLODING_ABOVE,
        "saturated": lambda: row[f"saturated_frac_{when}"] / outcomes.SATURATED_AT_LEAST,
        "dead": lambda: row[f"dead_frac_{when}"] / outcomes.DEAD_AT_LEAST,
        "diverged": lambda: math.inf,
    }[expected]()


@pytest.mark.integration
def test_known_answers_panel_through_the_real_pipeline(tmp_path, mnist_dir):
    ws = make_workspace(tmp_path / "panel")
    runs = []
    for study in (PANEL, LEARNING_RATES):
        config = write_config(
            ws,
            study
            | {
                "results": f"results/{study['study']}",
                "data": study["data"] | {"source": "idx", "path": str(mnist_dir)},
            },
            f"{study['study']}.yaml",
        )
        run_snakemake(ws, f"results/{study['study']}/tables/runs.parquet", "--cores", "2", "--configfile", str(config))
        runs.append(pd.read_parquet(ws / f"results/{study['study']}/tables/runs.parquet"))
    measured = []
    for cell, when, expected in KNOWN_ANSWERS:
        frame = runs[1] if "learning_rate" in cell else runs[0]
        hit = frame[np.logical_and.reduce([frame[k] == v for k, v in cell.items()])]
        assert len(hit) == 1, cell
        row = hit.iloc[0]
        measured.append((cell, when, expected, row[f"health_{when}"], margin(row, when, expected)))
    report = "\n".join(f"{c} {w}: expected {e}, got {g}, margin {m:.2f}x" for c, w, e, g, m in measured)
    assert all(e == g for _, _, e, g, _ in measured), report
    assert all(m >= MARGIN for *_, m in measured), report
    # batch norm moves deep sigmoid from vanishing to healthy
    panel = runs[0]
    sigmoid = panel[
        (panel["initializer"] == "glorot_uniform") & (panel["activation"] == "sigmoid") & (panel["depth"] == 16)
    ]
    assert sigmoid.set_index("regularizer")["health_init"].to_dict() == {"none": "vanishing", "batch_norm": "healthy"}
    # a pack's wall-clock time is shared among its members, so the runs add up to the packs' time
    assert (panel["pack_size"] > 1).any()
    np.testing.assert_allclose(panel["train_seconds"] * panel["pack_size"], panel["pack_seconds"], rtol=1e-9)
