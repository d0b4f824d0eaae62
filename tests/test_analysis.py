"""Tests of gradatlas.analysis on synthetic runs tables with known, planted effects."""

import re
from itertools import combinations, product

import numpy as np
import pandas as pd
import pytest

from gradatlas import analysis, outcomes, registry
from gradatlas.config import FACTORS  # noqa: E402

BASELINES = {"initializer": "glorot_uniform", "activation": "relu", "optimizer": "adam", "regularizer": "none"}
INITIALIZERS = ["glorot_uniform", "he_normal", "random_normal"]
ACTIVATIONS = ["relu", "tanh", "sigmoid"]


def plant_health(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs' verdicts from their planted ratios and shares, as diagnostics.run_measures gives them."""
    out = frame.copy()
    for when in outcomes.HEALTH_WHEN:
        saturated = out.get("saturated_frac_epoch1", pd.Series(np.nan, index=out.index))
        out[f"health_{when}"] = [
            outcomes.health_class(r, s, np.nan, st == "diverged" and when == "final")
            for r, s, st in zip(out[f"vanishing_ratio_{when}"], saturated, out.get("status", [""] * len(out)))
        ]
    return out


def make_runs(sigmoid_effect: float = -0.1, noise: float = 0.01, rng_seed: int = 0) -> pd.DataFrame:
    """3 initializers x 3 activations x 2 optimizers x 2 regularizers x 5 seeds = 180 runs.

    Only the activation matters: sigmoid changes accuracy by `sigmoid_effect`, never reaches the
    target accuracy and has a vanishing gradient ratio of about 10^-3 (others about 10^-0.3).
    """
    rng = np.random.default_rng(rng_seed)
    grid = pd.DataFrame(
        list(product(INITIALIZERS, ACTIVATIONS, ["adam", "sgd"], ["none", "l2"], range(5))),
        columns=[*FACTORS, "seed"],
    )
    sigmoid = grid["activation"] == "sigmoid"
    n = len(grid)
    accuracy = 0.95 + sigmoid_effect * sigmoid + rng.normal(0, noise, n)
    return plant_health(
        grid.assign(
            test_accuracy=accuracy,
            best_val_accuracy=accuracy + rng.normal(0, noise / 2, n),
            epochs_run=10,
            epochs_to_target=np.where(sigmoid, np.nan, rng.integers(2, 6, n)).astype(float),
            status=np.where(sigmoid, "stalled", "converged"),
            vanishing_ratio_init=10.0 ** (np.where(sigmoid, -3.0, -0.3) + rng.normal(0, 0.05, n)),
            vanishing_ratio_final=10.0 ** (np.where(sigmoid, -2.0, -0.2) + rng.normal(0, 0.05, n)),
            saturated_frac_epoch1=np.where(grid["activation"] == "relu", np.nan, np.where(sigmoid, 0.6, 0.1)),
            inactive_frac_epoch1=np.where(grid["activation"] == "relu", 0.5, np.nan),
            dead_frac_epoch1=np.where(grid["activation"] == "relu", 0.2, 0.0),
        )
    )


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return make_runs()


def row(table: pd.DataFrame, **match) -> pd.Series:
    selected = table
    for column, value in match.items():
        selected = selected[selected[column] == value]
    assert len(selected) == 1, f"expected one row for {match}, got {len(selected)}"
    return selected.iloc[0]


# --- outcomes ------------------------------------------------------------------------------------
def test_outcome_frame_adds_log10_ratio_and_distance_and_leaves_input_alone():
    runs = pd.DataFrame(
        {"vanishing_ratio_init": [1e-3, 1.0, 0.0, 500.0], "vanishing_ratio_final": [10.0, np.nan, 0.1, 11.0]}
    )
    out = analysis.outcome_frame(runs)
    np.testing.assert_allclose(out["log10_vanishing_ratio_init"], [-3.0, 0.0, np.nan, np.log10(500)])
    np.testing.assert_allclose(out["flow_distance_init"], [3.0, 0.0, np.nan, np.log10(500)])
    assert "flow_init" not in out.columns  # verdicts come from the runs table (diagnostics.run_measures), never here
    assert "log10_vanishing_ratio_init" not in runs.columns
    for name, (column, direction, label) in analysis.OUTCOMES.items():
        assert column == name and direction in {"higher", "lower"} and label


def test_a_diverged_run_adds_no_dead_saturated_or_inactive_value():
    runs = pd.DataFrame(
        {
            "activation": ["sigmoid", "sigmoid", "relu", "relu"],
            "seed": [0, 1, 0, 1],
            "status": ["converged", "diverged", "converged", "diverged"],
            # what an old engine recorded for a NaN network: every unit dead, none saturated
            "saturated_frac_epoch1": [0.2, 0.0, np.nan, np.nan],
            "inactive_frac_epoch1": [np.nan, np.nan, 0.4, 0.0],
            "dead_frac_epoch1": [0.0, 1.0, 0.1, 1.0],
        }
    )
    effects = pd.concat([analysis.main_effects(runs, ["activation"], o) for o in analysis.EPOCH1_FRACTIONS])
    assert row(effects, level="sigmoid", outcome="dead_frac_epoch1")["mean"] == 0.0
    assert row(effects, level="relu", outcome="dead_frac_epoch1")["mean"] == pytest.approx(0.1)
    assert row(effects, level="sigmoid", outcome="saturated_frac_epoch1")["n"] == 1
    assert row(effects, level="relu", outcome="inactive_frac_epoch1")["mean"] == pytest.approx(0.4)


def test_saturated_and_inactive_are_never_compared_across_activation_families(runs):
    effects = analysis.main_effects(runs, ["activation"], "saturated_frac_epoch1")
    assert row(effects, level="relu")["n"] == 0 and np.isnan(row(effects, level="relu")["mean"])
    inactive = analysis.main_effects(runs, ["activation"], "inactive_frac_epoch1")
    assert row(inactive, level="sigmoid")["n"] == 0 and row(inactive, level="relu")["n"] == 60
    assert analysis.activation_family("relu") == analysis.activation_family("leaky_relu") == "relu"
    assert {analysis.activation_family(a) for a in ["sigmoid", "tanh", "elu", "selu", "gelu"]} == {"saturating"}


# --- intervals -----------------------------------------------------------------------------------
def test_t_interval_over_two_seeds_is_wider_than_their_range():
    low, high = analysis.t_interval([0.90, 0.92])
    assert low < 0.90 - 0.05 and high > 0.92 + 0.05  # t(0.975, 1) = 12.7: much wider than the range
    assert np.isnan(analysis.t_interval([0.9])[0]) and np.isnan(analysis.t_interval([0.9, np.nan])[1])
    low3, high3 = analysis.t_interval([1.0, 2.0, 3.0])
    assert (low3, high3) == pytest.approx((2 - 4.303 * 1 / np.sqrt(3), 2 + 4.303 * 1 / np.sqrt(3)), abs=1e-3)


def test_intervals_print_n_and_never_nan():
    assert analysis.format_ci(np.nan, np.nan, 1) == "95% CI n/a, n=1"
    assert analysis.format_estimate(0.5, 0.4, 0.6, 3) == "+0.500 (95% CI +0.400 to +0.600, n=3)"
    assert analysis.format_estimate(np.nan, np.nan, np.nan, 0) == "n/a (n=0)"
    # a study where every run of a level diverged: no sentence may say "+nan"
    runs = make_runs()
    runs.loc[
        runs["activation"] == "sigmoid",
        ["test_accuracy", "best_val_accuracy", "vanishing_ratio_init", "vanishing_ratio_final"],
    ] = np.nan
    runs.loc[runs["activation"] == "sigmoid", "status"] = "diverged"
    tables = analysis.study_tables(runs.query("seed < 2"), FACTORS, BASELINES)
    text = "\n".join(tables["findings"]["sentence"])
    assert "nan" not in text.lower().replace("n/a", ""), text
    assert "n=" in text


# --- nuisance selection --------------------------------------------------------------------------
def test_select_nuisance_picks_best_validation_never_test():
    # In every (cell, seed) the validation accuracy favours lr 0.01 while the test accuracy favours 0.1.
    base = make_runs().drop(columns=["test_accuracy", "best_val_accuracy"])
    low = base.assign(learning_rate=0.01, best_val_accuracy=0.97, test_accuracy=0.90)
    high = base.assign(learning_rate=0.1, best_val_accuracy=0.93, test_accuracy=0.99)
    runs = pd.concat([high, low], ignore_index=True)

    chosen = analysis.select_nuisance(runs, ["learning_rate"], [*FACTORS, "learning_rate"])
    assert len(chosen) == len(base)
    assert "learning_rate" not in chosen.columns
    assert (chosen["chosen_learning_rate"] == 0.01).all()
    assert (chosen["test_accuracy"] == 0.90).all()

    # Shuffling the test column must not change which runs are chosen.
    shuffled = runs.assign(test_accuracy=np.random.default_rng(1).permutation(runs["test_accuracy"].to_numpy()))
    again = analysis.select_nuisance(shuffled, ["learning_rate"], [*FACTORS, "learning_rate"])
    pd.testing.assert_index_equal(again.index, chosen.index)


def test_select_nuisance_keeps_a_row_when_every_candidate_diverged():
    runs = pd.DataFrame(
        {"activation": ["relu"] * 2, "seed": [0, 0], "learning_rate": [0.1, 1.0], "best_val_accuracy": np.nan}
    )
    chosen = analysis.select_nuisance(runs, ["learning_rate"], ["activation"])
    assert len(chosen) == 1


def test_select_nuisance_without_nuisance_axes_returns_runs_unchanged(runs):
    pd.testing.assert_frame_equal(analysis.select_nuisance(runs, [], FACTORS), runs)


# --- main effects and paired deltas --------------------------------------------------------------
def test_main_effects_separate_sigmoid_from_relu(runs):
    effects = analysis.main_effects(runs, FACTORS, "test_accuracy")
    assert list(effects.columns) == ["factor", "level", "outcome", "mean", "ci_low", "ci_high", "n", "share_nonmissing"]
    assert len(effects) == 3 + 3 + 2 + 2
    sigmoid = row(effects, factor="activation", level="sigmoid")
    relu = row(effects, factor="activation", level="relu")
    assert sigmoid["ci_high"] < relu["ci_low"]
    assert sigmoid["mean"] == pytest.approx(relu["mean"] - 0.1, abs=0.01)
    assert relu["n"] == 60 and relu["share_nonmissing"] == 1.0


def test_main_effects_count_missing_outcomes(runs):
    diverged = runs.copy()
    diverged.loc[(diverged["optimizer"] == "sgd") & (diverged["seed"] == 0), "test_accuracy"] = np.nan
    effects = analysis.main_effects(diverged, ["optimizer"], "test_accuracy")
    sgd = row(effects, level="sgd")
    assert sgd["n"] == 72 and sgd["share_nonmissing"] == pytest.approx(72 / 90)
    assert np.isfinite(sgd["mean"])


def test_paired_deltas_find_the_planted_effect_only(runs):
    deltas = analysis.paired_deltas(runs, FACTORS, "test_accuracy", BASELINES)
    sigmoid = row(deltas, factor="activation", level="sigmoid")
    assert sigmoid["ci_high"] < 0
    assert sigmoid["n_pairs"] == 60 and sigmoid["baseline"] == "relu"
    for level in ["he_normal", "random_normal"]:
        initializer = row(deltas, factor="initializer", level=level)
        assert initializer["ci_low"] < 0 < initializer["ci_high"]


def test_paired_deltas_cover_zero_without_effects():
    # A fixed noise draw: with six nominal 95% CIs, about one draw in four has a miss by chance.
    deltas = analysis.paired_deltas(make_runs(sigmoid_effect=0.0, rng_seed=3), FACTORS, "test_accuracy", BASELINES)
    assert len(deltas) == 2 + 2 + 1 + 1
    assert ((deltas["ci_low"] < 0) & (deltas["ci_high"] > 0)).all()


def test_paired_deltas_skip_factors_without_baseline_level(runs):
    baselines = {**BASELINES, "initializer": "orthogonal"}
    deltas = analysis.paired_deltas(runs, FACTORS, "test_accuracy", baselines)
    assert "initializer" not in set(deltas["factor"])
    assert set(deltas["factor"]) == {"activation", "optimizer", "regularizer"}


def test_paired_deltas_refuse_unreduced_nuisance_axes(runs):
    doubled = pd.concat([runs.assign(learning_rate=0.1), runs.assign(learning_rate=0.01)])
    with pytest.raises(ValueError, match="select_nuisance"):
        analysis.paired_deltas(doubled, FACTORS, "test_accuracy", BASELINES)


# --- interaction table and variance decomposition ------------------------------------------------
def test_interaction_table_is_long_and_tidy(runs):
    table = analysis.interaction_table(runs, "activation", "optimizer", "test_accuracy")
    assert list(table.columns) == ["activation", "optimizer", "outcome", "mean", "n"]
    assert len(table) == 6 and (table["n"] == 30).all()
    cell = row(table, activation="sigmoid", optimizer="sgd")
    expected = runs.query("activation == 'sigmoid' and optimizer == 'sgd'")["test_accuracy"].mean()
    assert cell["mean"] == pytest.approx(expected)


def test_variance_decomposition_ranks_activation_first(runs):
    anova = analysis.variance_decomposition(runs, FACTORS, "test_accuracy")
    assert list(anova.columns) == ["term", "sum_sq", "df", "eta_sq", "partial_eta_sq", "F", "p"]
    assert anova["term"].iloc[0] == "C(activation)"
    assert anova["eta_sq"].iloc[0] > 0.9 and anova["p"].iloc[0] < 1e-6
    assert anova["term"].iloc[-1] == "Residual"
    assert "C(activation):C(optimizer)" in set(anova["term"])
    # Balanced design: type-II sums of squares partition the total.
    assert anova["eta_sq"].sum() == pytest.approx(1.0)


def test_variance_decomposition_drops_missing_outcomes_and_inestimable_terms(runs):
    one_level = runs.assign(regularizer="none")
    one_level.loc[one_level["seed"] == 0, "test_accuracy"] = np.nan
    anova = analysis.variance_decomposition(one_level, FACTORS, "test_accuracy")
    assert not any("regularizer" in term for term in anova["term"])
    assert anova["df"].sum() == pytest.approx(len(runs) * 4 / 5 - 1)


def test_variance_decomposition_with_too_few_rows_is_empty(runs):
    anova = analysis.variance_decomposition(runs.head(1), FACTORS, "test_accuracy")
    assert anova.empty
    assert list(anova.columns) == ["term", "sum_sq", "df", "eta_sq", "partial_eta_sq", "F", "p"]


# --- epochs to target ----------------------------------------------------------------------------
def test_kaplan_meier_on_a_hand_computed_example():
    # Times 1, 2, 2+, 3, 4+ (+ = censored): S(1) = 4/5, S(2) = 4/5 * 3/4, S(3) = 0.6 * 1/2.
    curve = analysis.kaplan_meier([1, 2, 2, 3, 4], [True, True, False, True, False])
    np.testing.assert_allclose(curve["time"], [1, 2, 3])
    np.testing.assert_array_equal(curve["n_at_risk"], [5, 4, 2])
    np.testing.assert_allclose(curve["survival"], [0.8, 0.6, 0.3])
    assert analysis.km_median([1, 2, 2, 3, 4], [True, True, False, True, False]) == 3
    assert analysis.km_median([5, 10], [True, False]) == 5  # S(5) = 1/2 counts as reaching the median
    assert np.isnan(analysis.km_median([5, 10, 10], [True, False, False]))  # S stays at 2/3
    assert np.isnan(analysis.km_median([10, 10], [False, False]))


def test_convergence_table_counts_misses_with_kaplan_meier():
    runs = pd.DataFrame(
        {
            "activation": ["relu", "relu", "relu", "sigmoid", "sigmoid"],
            "epochs_to_target": [2.0, 3.0, np.nan, 4.0, np.nan],
            "epochs_run": [10, 10, 6, 10, 10],
        }
    )
    summary = analysis.convergence_table(runs, ["activation"], 0.9)
    relu, sigmoid = row(summary, level="relu"), row(summary, level="sigmoid")
    assert (relu["n"], relu["n_reached"]) == (3, 2) and (sigmoid["n"], sigmoid["n_reached"]) == (2, 1)
    assert relu["km_median_epochs"] == 3 and sigmoid["km_median_epochs"] == 4


def planted_curves(runs: pd.DataFrame, epochs: int = 4) -> pd.DataFrame:
    """Validation curves: relu climbs fast, tanh slowly, sigmoid stays low; none reaches 0.95."""
    rows = []
    for r in runs.itertuples(index=False):
        top = {"relu": 0.90, "tanh": 0.80, "sigmoid": 0.30}[r.activation]
        speed = {"relu": 0.9, "tanh": 0.4, "sigmoid": 0.2}[r.activation]
        for e in range(1, epochs + 1):
            rows.append(r._asdict() | {"epoch": e, "val_accuracy": top * (1 - (1 - speed) ** e), "loss": 1.0 / e})
    return pd.DataFrame(rows)


def test_convergence_section_is_never_empty_when_no_run_reaches_the_target(runs):
    runs = runs.assign(epochs_to_target=np.nan, epochs_run=4, steps_per_epoch=100)
    curves = planted_curves(runs)
    runs["best_val_accuracy"] = (
        curves.groupby([*FACTORS, "seed"])["val_accuracy"]
        .max()
        .reindex(pd.MultiIndex.from_frame(runs[[*FACTORS, "seed"]]))
        .to_numpy()
    )
    settings = {
        "target_accuracy": 0.95,
        "epochs": 4,
        "train_images": 1000,
        "batch_size": 10,
        "depth": 2,
        "width": 8,
        "n_seeds": 5,
        "learning_rates": {"adam": 0.001},
    }
    tables = analysis.study_tables(runs, FACTORS, BASELINES, curves=curves, settings=settings)
    conv = tables["convergence"]
    assert conv["n_reached"].sum() == 0
    relu = row(conv, factor="activation", level="relu")
    assert relu["relative_target"] == pytest.approx(0.95 * runs["best_val_accuracy"].max())
    assert relu["n_reached_relative"] == 60 and np.isfinite(relu["km_median_epochs_relative"])
    assert relu["median_steps_relative"] == 100 * relu["km_median_epochs_relative"]
    assert relu["mean_val_auc"] > row(conv, factor="activation", level="tanh")["mean_val_auc"]
    assert row(conv, factor="activation", level="sigmoid")["n_reached_relative"] == 0
    speed = row(tables["headline"], question="convergence speed", factor="activation")
    assert speed["best"] == "relu" and speed["runner_up"] == "tanh" and speed["effect"] > 0 and speed["n"] == 60
    text = "\n".join(tables["findings"]["sentence"])
    assert "No run reached the configured target 0.95" in text and "relative target" in text
    assert "Convergence speed, activation: relu learns fastest" in text


def test_complete_curves_carry_early_stopped_and_diverged_runs():
    runs = pd.DataFrame(
        {"activation": ["relu", "sigmoid", "tanh"], "seed": 0, "status": ["converged", "diverged", "converged"]}
    )
    curves = pd.DataFrame(
        {
            "activation": ["relu", "relu", "sigmoid", "sigmoid", "tanh", "tanh", "tanh"],
            "seed": 0,
            "epoch": [1, 2, 1, 2, 1, 2, 3],
            "val_accuracy": [0.8, 0.9, 0.5, np.nan, 0.6, 0.7, 0.8],
        }
    )
    full = analysis.complete_curves(curves, runs, ["activation", "seed"], epochs=3)
    assert len(full) == 9
    got = full.set_index(["activation", "epoch"])
    assert got.loc[("relu", 3), "val_accuracy"] == 0.9 and got.loc[("relu", 3), "filled"] == "early_stop"
    assert got.loc[("sigmoid", 2), "val_accuracy"] == analysis.CHANCE_ACCURACY
    assert got.loc[("sigmoid", 3), "filled"] == "diverged"


def test_status_counts_add_up(runs):
    mixed = runs.assign(status=np.where(runs["seed"] == 0, "diverged", runs["status"]))
    counts = analysis.status_counts(mixed, FACTORS)
    assert list(counts.columns) == ["factor", "level", "n", "converged", "stalled", "diverged"]
    sigmoid = row(counts, factor="activation", level="sigmoid")
    assert (sigmoid["n"], sigmoid["converged"], sigmoid["stalled"], sigmoid["diverged"]) == (60, 0, 48, 12)
    assert (counts[["converged", "stalled", "diverged"]].sum(axis=1) == counts["n"]).all()


# --- leaderboard and findings --------------------------------------------------------------------
def test_leaderboard_orders_best_then_worst(runs):
    board = analysis.leaderboard(runs, [*FACTORS, "seed"], "test_accuracy", k=3)
    assert list(board["rank_group"]) == ["best"] * 3 + ["worst"] * 3
    assert list(board["rank"]) == [1, 2, 3, 34, 35, 36]
    best = board[board["rank_group"] == "best"]
    assert best["mean"].is_monotonic_decreasing
    assert (board.loc[board["rank_group"] == "worst", "activation"] == "sigmoid").all()
    assert (best["activation"] != "sigmoid").all()
    assert (board["n_seeds"] == 5).all() and (board["ci_low"] <= board["mean"]).all()

    fastest = analysis.leaderboard(runs.dropna(subset=["epochs_to_target"]), FACTORS, "epochs_to_target", k=2)
    assert fastest.loc[fastest["rank_group"] == "best", "mean"].is_monotonic_increasing


def test_leaderboard_with_one_seed_has_nan_ci_and_no_overlap(runs):
    board = analysis.leaderboard(runs[runs["seed"] == 0], ["activation"], "test_accuracy", k=2)
    # Three cells and k=2: the worst group only takes the cell not already among the best.
    assert list(board["rank_group"]) == ["best", "best", "worst"]
    assert board["activation"].iloc[-1] == "sigmoid"

    single = runs[(runs["seed"] == 0) & (runs["optimizer"] == "adam") & (runs["regularizer"] == "none")]
    one_seed = analysis.leaderboard(single, [*FACTORS, "seed"], "test_accuracy", k=2)
    assert one_seed["ci_low"].isna().all() and (one_seed["n_seeds"] == 1).all()


def test_findings_name_the_planted_factor(runs):
    table = analysis.findings(runs, FACTORS, BASELINES)
    sentences = list(table["sentence"])
    assert all(isinstance(s, str) and s for s in sentences)
    text = "\n".join(sentences)
    assert "activation explains" in text
    assert "activation=sigmoid instead of relu" in text
    vanishing = next(s for s in sentences if s.startswith("Most vanishing cell at initialization"))
    assert "activation=sigmoid" in vanishing and re.search(r"10\^-3\.\d", vanishing)
    assert "No cell has a mean delta ratio > 10 at initialization" in text


def test_findings_follow_the_data_not_hard_coded_names():
    # Plant the effect on the optimizer instead: findings must follow it.
    runs = make_runs(sigmoid_effect=0.0)
    runs["test_accuracy"] -= 0.2 * (runs["optimizer"] == "sgd")
    text = "\n".join(analysis.findings(runs, FACTORS, BASELINES)["sentence"])
    assert "optimizer explains" in text
    assert "optimizer=sgd instead of adam" in text


# --- the study's tables, as rule analyze writes them -----------------------------------------------
def test_study_tables_find_the_planted_effect_and_document_their_columns(runs):
    tables = analysis.study_tables(runs, FACTORS, BASELINES)
    assert set(tables) == set(registry.ANALYSIS_TABLES)
    for name, frame in tables.items():
        if name in ("chosen_runs", "completed_curves"):
            continue  # their speed columns need the curves table (tests/test_report.py checks them with it)
        documented = [c for c in registry.TABLES[name].columns if "<" not in c]
        assert set(documented) <= set(frame.columns), name
    anova = tables["variance_decomposition"].query("outcome == 'test_accuracy'")
    assert anova.iloc[0]["term"] == "C(activation)"
    pairs = set(zip(tables["interactions"]["factor_a"], tables["interactions"]["factor_b"]))
    assert pairs == set(combinations(FACTORS, 2))
    assert set(tables["leaderboard"]["outcome"]) == set(analysis.LEADERBOARD_OUTCOMES) - {"val_auc"}  # no curves
    delta = tables["paired_deltas"].query("outcome == 'test_accuracy' and level == 'sigmoid'").iloc[0]
    assert delta["ci_high"] < -0.05


def test_study_tables_optimize_nuisance_axes_on_validation(runs):
    doubled = pd.concat([runs.assign(learning_rate=0.1), runs.assign(learning_rate=0.01)], ignore_index=True)
    doubled.loc[doubled["learning_rate"] == 0.01, "best_val_accuracy"] += 0.5
    doubled.loc[doubled["learning_rate"] == 0.01, "test_accuracy"] -= 0.5
    tables = analysis.study_tables(doubled, [*FACTORS, "learning_rate"], BASELINES, ["learning_rate"])
    choices = tables["nuisance_choices"]
    assert len(choices) == len(runs) and (choices["chosen_learning_rate"] == "0.01").all()
    assert "learning_rate" not in set(tables["main_effects"]["factor"])


def test_findings_give_the_best_level_per_factor_with_its_ci():
    text = "\n".join(analysis.findings(make_runs(sigmoid_effect=0.1), FACTORS, BASELINES)["sentence"])
    assert "Best activation against the baseline relu: sigmoid, +0." in text and "95% CI +0." in text
    assert "n=60 pairs)" in text
    text = "\n".join(analysis.findings(make_runs(sigmoid_effect=-0.1), FACTORS, BASELINES)["sentence"])
    assert "No activation" in text and "beats the baseline relu" in text


# --- gradient flow: vanishing and exploding never mixed --------------------------------------------
def flow_runs() -> pd.DataFrame:
    """he_normal is healthy; glorot_uniform vanishes (10^-2.5); random_normal explodes (10^2.9) but sits
    closer to 0 on average with sigmoid's shrink mixed in: a signed mean would call it best."""
    rng = np.random.default_rng(5)
    grid = pd.DataFrame(
        list(
            product(["glorot_uniform", "he_normal", "random_normal"], ["relu", "sigmoid"], ["adam"], ["none"], range(3))
        ),
        columns=[*FACTORS, "seed"],
    )
    log = np.select(
        [
            grid["initializer"] == "he_normal",
            grid["initializer"] == "glorot_uniform",
            (grid["initializer"] == "random_normal") & (grid["activation"] == "relu"),
        ],
        [0.0, -2.5, 2.9],
        default=-2.9,
    ) + rng.normal(0, 0.05, len(grid))
    return plant_health(
        grid.assign(
            vanishing_ratio_init=10.0**log,
            vanishing_ratio_final=10.0**log,
            test_accuracy=0.9,
            best_val_accuracy=0.9,
            status="converged",
            epochs_to_target=np.nan,
            epochs_run=3,
        )
    )


def test_gradient_flow_table_keeps_directions_apart_and_ranks_healthy_first():
    flow = analysis.gradient_flow_table(flow_runs(), FACTORS).query("when == 'init' and factor == 'initializer'")
    random = row(flow, level="random_normal")
    assert (random["share_exploding"], random["share_vanishing"], random["share_healthy"]) == (0.5, 0.5, 0.0)
    assert random["mean_distance"] == pytest.approx(2.9, abs=0.1)  # not ~0, as a signed mean would give
    he = row(flow, level="he_normal")
    assert he["rank"] == 1 and he["keeps_alive"] and he["share_healthy"] == 1.0
    headline = row(analysis.headline(flow_runs(), FACTORS), question="gradient health init", factor="initializer")
    assert headline["best"] == "he_normal" and headline["runner_up"] == "glorot_uniform"
    assert headline["effect"] < -2 and headline["n"] == 6 and headline["paired"]
    assert "10^-2.5" in headline["sentence"] and "n=6 matched pairs" in headline["sentence"]


def test_an_exploding_cell_never_ranks_best():
    runs = flow_runs()
    # without any healthy cell, the smallest distance is an exploding one: it still may not be "best"
    runs = runs[runs["initializer"] != "he_normal"].copy()
    runs.loc[(runs["initializer"] == "random_normal") & (runs["activation"] == "relu"), "vanishing_ratio_init"] = 20.0
    board = analysis.leaderboard(runs, FACTORS, "flow_distance_init", k=2)
    assert (board["rank_group"] == "worst").all(), board
    flow = analysis.gradient_flow_table(runs, FACTORS).query("when == 'init' and factor == 'initializer'")
    assert not flow["keeps_alive"].any()
    line = row(analysis.headline(runs, FACTORS), question="gradient health init", factor="initializer")
    assert "no level keeps most runs healthy" in line["sentence"] and not line["keeps_alive"]
    # with a healthy cell present, an exploding cell with a smaller distance still ranks after it
    runs2 = flow_runs()
    runs2.loc[runs2["initializer"] == "he_normal", "vanishing_ratio_init"] = 0.15  # healthy, distance 0.8
    runs2.loc[(runs2["initializer"] == "random_normal") & (runs2["activation"] == "relu"), "vanishing_ratio_init"] = (
        11.0
    )
    board = analysis.leaderboard(runs2, FACTORS, "flow_distance_init", k=3)
    best = board[board["rank_group"] == "best"]
    assert (
        len(best)
        and best["health"].str.startswith("3 of 3 healthy").all()
        and board.iloc[0]["initializer"] == "he_normal"
    )
    text = "\n".join(analysis.findings(runs2, FACTORS, BASELINES)["sentence"])
    assert "Most exploding cell at initialization: initializer=random_normal, activation=relu" in text


# --- optional axes, null values included -----------------------------------------------------------
OPTIONAL = {
    "learning_rate": [0.01, 0.1],
    "depth": [2, 3],
    "width": [16, 32],
    "batch_size": [32, 64],
    "lr_schedule": ["constant", "inverse_time"],
    "clipnorm": [None, 0.5],
    "clipvalue": [None, 1.0],
}


def optional_runs(axes: dict) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    base = {
        "initializer": ["glorot_uniform", "he_normal"],
        "activation": ["relu", "sigmoid"],
        "optimizer": ["adam"],
        "regularizer": ["none"],
    } | axes
    grid = pd.DataFrame(list(product(*base.values(), range(2))), columns=[*base, "seed"])
    n = len(grid)
    acc = 0.9 - 0.3 * (grid["activation"] == "sigmoid") + rng.normal(0, 0.01, n)
    return plant_health(
        grid.assign(
            test_accuracy=acc,
            best_val_accuracy=acc + rng.normal(0, 0.01, n),
            status="converged",
            epochs_run=2,
            epochs_to_target=np.nan,
            steps_per_epoch=10,
            vanishing_ratio_init=10 ** np.where(grid["activation"] == "sigmoid", -2.0, 0.1),
            vanishing_ratio_final=10 ** np.where(grid["activation"] == "sigmoid", -1.5, 0.0),
            saturated_frac_epoch1=np.nan,
            inactive_frac_epoch1=np.nan,
            dead_frac_epoch1=0.0,
        )
    )


@pytest.mark.parametrize(
    "axes, nuisance",
    [
        (
            {"learning_rate": [0.01, 0.1], "lr_schedule": ["constant", "inverse_time"], "clipnorm": [None, 0.5]},
            ["learning_rate"],
        )
    ]  # the reported crash: KeyError (..., 'inverse_time', nan)
    + [({name: values}, []) for name, values in OPTIONAL.items()]
    + [({name: values}, [name]) for name, values in OPTIONAL.items()]
    + [(OPTIONAL, ["learning_rate", "clipvalue"]), (OPTIONAL, [])],
)
def test_every_optional_axis_goes_through_the_analysis(axes, nuisance):
    runs = optional_runs(axes)
    factors = [*FACTORS, *axes]
    curves = pd.concat([runs.assign(epoch=e, val_accuracy=runs["best_val_accuracy"] * e / 2) for e in (1, 2)])
    settings = {
        "target_accuracy": 0.95,
        "epochs": 2,
        "train_images": 100,
        "batch_size": 10,
        "depth": 2,
        "width": 8,
        "n_seeds": 2,
        "nuisance": nuisance,
        "grid_learning_rate": axes.get("learning_rate", []),
    }
    tables = analysis.study_tables(
        runs, factors, BASELINES | {"clipnorm": None}, nuisance, curves=curves, settings=settings
    )
    assert set(tables) == set(registry.analysis_table_names(nuisance))
    for axis, values in axes.items():
        if axis in nuisance:
            assert set(tables["nuisance_choices"][f"chosen_{axis}"]) <= {analysis.level_label(v) for v in values}
        else:
            levels = set(tables["main_effects"].query("factor == @axis")["level"])
            assert levels == {analysis.level_label(v) for v in values}
    text = "\n".join(tables["findings"]["sentence"])
    assert "nan" not in text.lower().replace("n/a", "")
    assert len(tables["headline"]) >= 1
