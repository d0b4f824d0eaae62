"""Snakemake script: the study's analysis tables (chosen runs with every derived outcome, completed curves,
headline, gradient flow, convergence, effects, ...)."""

from pathlib import Path

import pandas as pd

from gradatlas import aggregate, analysis
from gradatlas.files import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    runs = pd.read_parquet(snakemake.input.runs)
    curves = pd.read_parquet(snakemake.input.curves)
    tables = analysis.study_tables(
        runs, list(p.factors), dict(p.baselines), list(p.nuisance), curves=curves, settings=dict(p.settings)
    )
    aggregate.write(tables, Path(p.out_dir))
    print("wrote " + ", ".join(f"{name} ({len(t)} rows)" for name, t in tables.items()))
