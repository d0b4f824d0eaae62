"""The report's figures: one function each, tables in, a matplotlib Figure out.

Colour-blind-safe palette throughout (seaborn "colorblind"); every axis says what it shows and
its unit.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")


def accuracy_atlas(runs: pd.DataFrame):
    """Test accuracy (seed mean) over initializer x activation, one panel per optimizer x regularizer."""
    cells = runs.groupby(["optimizer", "regularizer", "initializer", "activation"], as_index=False).agg(
        test_accuracy=("test_accuracy", "mean"), diverged=("status", lambda s: (s == "diverged").any())
    )
    panels = cells[["optimizer", "regularizer"]].drop_duplicates().values.tolist()
    ncols = min(4, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    inits, acts = sorted(runs["initializer"].unique()), sorted(runs["activation"].unique())
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.1 * len(acts) * ncols + 2, 0.7 * len(inits) * nrows + 1.5), squeeze=False
    )
    for ax, (opt, reg) in zip(axes.flat, panels):
        sub = cells[(cells.optimizer == opt) & (cells.regularizer == reg)]
        grid = sub.pivot(index="initializer", columns="activation", values="test_accuracy").reindex(
            index=inits, columns=acts
        )
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f", cbar=False)
        for _, row in sub[sub.diverged].iterrows():
            ax.text(acts.index(row.activation) + 0.5, inits.index(row.initializer) + 0.85, "diverged",
                    ha="center", va="center", fontsize=7, color="red")  # fmt: skip
        ax.set_title(f"{opt} / {reg}", fontsize=10)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Test accuracy (mean over seeds; 0-1)")
    fig.tight_layout()
    return fig


def learning_curves(curves: pd.DataFrame, factor: str):
    """Validation accuracy per epoch, one line per level of `factor`, band = 95% CI over runs."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(curves, x="epoch", y="val_accuracy", hue=factor, errorbar=("ci", 95), marker="o", ax=ax)
    ax.set_xlabel("epoch (passes over the training set)")
    ax.set_ylabel("validation accuracy (0-1)")
    ax.set_title(f"Learning curves by {factor}")
    fig.tight_layout()
    return fig


def delta_profile_at_init(diagnostics: pd.DataFrame):
    """delta_norm per layer at step 0, log scale, one panel per activation, one line per initializer."""
    init = diagnostics[diagnostics["step"] == 0]
    acts = sorted(init["activation"].unique())
    fig, axes = plt.subplots(1, len(acts), figsize=(4 * len(acts), 3.6), sharey=True, squeeze=False)
    for ax, act in zip(axes.flat, acts):
        sns.lineplot(init[init.activation == act], x="layer", y="delta_norm", hue="initializer", marker="o",
                     errorbar=("ci", 95), ax=ax)  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(act)
        ax.set_xlabel("layer (1 = input side)")
        ax.set_ylabel("delta_norm at init (log)")
    fig.tight_layout()
    return fig
