"""Tests of gradatlas.analysis on synthetic runs tables with known, planted effects."""

from itertools import product

import numpy as np
import pandas as pd
import pytest

from gradatlas import analysis

FACTORS = ["initializer", "activation", "optimizer", "regularizer"]
BASELINES = {"initializer": "glorot_uniform", "activation": "relu", "optimizer": "adam", "regularizer": "none"}
INITIALIZERS = ["glorot_uniform", "he_normal", "random_normal"]
ACTIVATIONS = ["relu", "tanh", "sigmoid"]


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
    return grid.assign(
        test_accuracy=accuracy,
        best_val_accuracy=accuracy + rng.normal(0, noise / 2, n),
        epochs_run=10,
        epochs_to_target=np.where(sigmoid, np.nan, rng.integers(2, 6, n)).astype(float),
        status=np.where(sigmoid, "stalled", "converged"),
        vanishing_ratio_init=10.0 ** (np.where(sigmoid, -3.0, -0.3) + rng.normal(0, 0.05, n)),
        vanishing_ratio_final=10.0 ** (np.where(sigmoid, -2.0, -0.2) + rng.normal(0, 0.05, n)),
        saturated_frac_epoch1=np.where(sigmoid, 0.6, 0.1),
        dead_frac_epoch1=np.where(grid["activation"] == "relu", 0.2, 0.0),
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
def test_outcome_frame_adds_log10_ratios_and_leaves_input_alone():
    runs = pd.DataFrame({"vanishing_ratio_init": [1e-3, 1.0, 0.0], "vanishing_ratio_final": [10.0, np.nan, 0.1]})
    out = analysis.outcome_frame(runs)
    np.testing.assert_allclose(out["log10_vanishing_ratio_init"], [-3.0, 0.0, np.nan])
    np.testing.assert_allclose(out["log10_vanishing_ratio_final"], [1.0, np.nan, -1.0])
    assert "log10_vanishing_ratio_init" not in runs.columns
    for name, (column, direction, label) in analysis.OUTCOMES.items():
        assert column == name and direction in {"higher", "lower"} and label


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
    assert list(effects.columns) == [
        "factor", "level", "outcome", "mean", "ci_low", "ci_high", "n", "share_nonmissing"
    ]  # fmt: skip
    assert len(effects) == 3 + 3 + 2 + 2
    sigmoid = row(effects, factor="activation", level="sigmoid")
    relu = row(effects, factor="activation", level="relu")
    assert sigmoid["ci_high"] < relu["ci_low"]
    assert sigmoid["mean"] == pytest.approx(relu["mean"] - 0.1, abs=0.01)
    assert relu["n"] == 60 and relu["share_nonmissing"] == 1.0


def test_main_effects_count_missing_outcomes(runs):
    diverged = runs.copy()
    diverged.loc[(diverged["optimizer"] == "sgd") & (diverged["seed"] == 0), "test_accuracy"] = np.nan
    effects = analysis.main_effects(diverged, ["optimizer"], "test_accuracy", n_boot=200)
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
    deltas = analysis.paired_deltas(runs, FACTORS, "test_accuracy", baselines, n_boot=100)
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


def test_epochs_to_target_counts_misses_and_ranks_them_last():
    runs = pd.DataFrame(
        {
            "activation": ["relu", "relu", "relu", "sigmoid", "sigmoid"],
            "epochs_to_target": [2.0, 3.0, np.nan, 4.0, np.nan],
            "epochs_run": [10, 10, 6, 10, 10],
        }
    )
    summary = analysis.epochs_to_target_summary(runs, ["activation"])
    relu = row(summary, level="relu")
    sigmoid = row(summary, level="sigmoid")
    assert (relu["n"], relu["n_reached"], relu["share_reached"]) == (3, 2, pytest.approx(2 / 3))
    assert (sigmoid["n"], sigmoid["n_reached"], sigmoid["share_reached"]) == (2, 1, 0.5)
    # Ranks: 2 -> 1, 3 -> 2, 4 -> 3, both misses tie at 4.5.
    assert relu["mean_rank"] == pytest.approx((1 + 2 + 4.5) / 3)
    assert sigmoid["mean_rank"] == pytest.approx((3 + 4.5) / 2)
    # relu: S(2) = 2/3, S(3) = 1/3 -> median 3; sigmoid: S(4) = 1/2 -> median 4.
    assert relu["km_median_epochs"] == 3 and sigmoid["km_median_epochs"] == 4


def test_epochs_to_target_level_that_never_reaches(runs):
    summary = analysis.epochs_to_target_summary(runs, FACTORS)
    sigmoid = row(summary, factor="activation", level="sigmoid")
    assert sigmoid["n"] == 60 and sigmoid["share_reached"] == 0 and np.isnan(sigmoid["km_median_epochs"])
    activation = summary[summary["factor"] == "activation"]
    assert activation["mean_rank"].idxmax() == sigmoid.name


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
    sentences = analysis.findings(runs, FACTORS, BASELINES)
    assert all(isinstance(s, str) and s for s in sentences)
    text = "\n".join(sentences)
    assert sentences[0].startswith("activation explains")
    assert "activation=sigmoid instead of relu" in text
    vanishing = next(s for s in sentences if s.startswith("Mean vanishing ratio at initialization"))
    lowest, highest = vanishing.split(" and highest for ")
    assert "activation=sigmoid" in lowest and "10^-3." in lowest
    assert "activation=sigmoid" not in highest and "10^-0.3" in highest
    assert "Fastest to the target accuracy" in text


def test_findings_follow_the_data_not_hard_coded_names():
    # Plant the effect on the optimizer instead: findings must follow it.
    runs = make_runs(sigmoid_effect=0.0)
    runs["test_accuracy"] -= 0.2 * (runs["optimizer"] == "sgd")
    text = "\n".join(analysis.findings(runs, FACTORS, BASELINES))
    assert text.startswith("optimizer explains")
    assert "optimizer=sgd instead of adam" in text


# --- the study's tables, as rule analyze writes them -----------------------------------------------
def test_study_tables_find_the_planted_effect_and_document_their_columns(runs):
    tables = analysis.study_tables(runs, FACTORS, BASELINES, n_boot=200)
    assert set(tables) == {"main_effects", "paired_deltas", "interactions", "variance_decomposition",
                           "epochs_to_target", "status_counts", "leaderboard"}  # fmt: skip
    for name, frame in tables.items():
        documented = [c for c in analysis.TABLE_COLUMNS[name] if "<" not in c]
        assert set(documented) <= set(frame.columns), name
    anova = tables["variance_decomposition"].query("outcome == 'test_accuracy'")
    assert anova.iloc[0]["term"] == "C(activation)"
    pairs = set(zip(tables["interactions"]["factor_a"], tables["interactions"]["factor_b"]))
    assert {("initializer", "activation"), ("activation", "regularizer"), ("initializer", "optimizer")} <= pairs
    assert set(tables["leaderboard"]["outcome"]) == set(analysis.LEADERBOARD_OUTCOMES)
    delta = tables["paired_deltas"].query("outcome == 'test_accuracy' and level == 'sigmoid'").iloc[0]
    assert delta["ci_high"] < -0.05


def test_study_tables_optimize_nuisance_axes_on_validation(runs):
    doubled = pd.concat([runs.assign(learning_rate=0.1), runs.assign(learning_rate=0.01)], ignore_index=True)
    doubled.loc[doubled["learning_rate"] == 0.01, "best_val_accuracy"] += 0.5
    doubled.loc[doubled["learning_rate"] == 0.01, "test_accuracy"] -= 0.5
    tables = analysis.study_tables(doubled, [*FACTORS, "learning_rate"], BASELINES, ["learning_rate"], n_boot=50)
    choices = tables["nuisance_choices"]
    assert len(choices) == len(runs) and (choices["chosen_learning_rate"] == 0.01).all()
    assert "learning_rate" not in set(tables["main_effects"]["factor"])


def test_findings_give_the_best_level_per_factor_with_its_ci():
    text = "\n".join(analysis.findings(make_runs(sigmoid_effect=0.1), FACTORS, BASELINES))
    assert "Best activation against the baseline relu: sigmoid, +0." in text and "95% CI +0." in text
    text = "\n".join(analysis.findings(make_runs(sigmoid_effect=-0.1), FACTORS, BASELINES))
    assert "No activation" in text and "beats the baseline relu" in text
