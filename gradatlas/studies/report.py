"""The study preset's page: `<results>/report/study.html` (self-contained, figures embedded) and
`<results>/report/study.json` (the verdict and the numbers behind it, machine-readable).

Every section says what was run, the published claim, our result with seeds, and a verdict
computed from the numbers by the stated tolerance.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradatlas import page  # noqa: E402
from gradatlas.files import atomic_write, jsonable, write_json  # noqa: E402
from gradatlas.studies import PRESETS, settings, verdict_word  # noqa: E402

COMMANDS = {name: f"snakemake --cores 2 --configfile studies/{name}.yaml" for name in PRESETS}


DPI = 120  # as the grid report (gradatlas.report.DPI)


def _figure(fig):
    return page.render('<img alt="figure" src="{{ src }}">', src=page.png_data_uri(page.matplotlib_png(fig, DPI)))


def _table(df: pd.DataFrame, digits: int = 4):
    return page.table(df, max_rows=10_000, digits=digits, cls="t")


def _verdict(ok: bool, why: str):
    return page.render(
        '<p class="verdict {{ cls }}"><b>Verdict: {{ word }}</b> — {{ why }}</p>',
        cls="ok" if ok else "no",
        word=verdict_word(ok),
        why=why,
    )


def _fmt(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


# --- sections ------------------------------------------------------------------------------------
def nielsen_section(config, inputs) -> tuple[str, dict]:
    from gradatlas.studies import nielsen

    s = settings(config)
    norms = pd.read_parquet(inputs["nielsen"])
    res = nielsen.assess(norms)
    rows = []
    for r in res.itertuples():
        rows.append(
            {
                "head": r.head,
                "k": r.hidden_layers,
                "ours (geo. mean)": _fmt(r.ours),
                "Nielsen": _fmt(r.published),
                "our adjacent ratios": _fmt(r.adjacent_ratios),
                "his": _fmt(r.published_adjacent_ratios),
                "our first/last": r.first_last,
                "his first/last": r.published_first_last,
                "verdict": verdict_word(r.reproduced),
                "seeds reproduced": f"{r.seeds_reproduced}/{r.seeds}",
            }
        )
    fig, axes = plt.subplots(
        1, len(res["hidden_layers"].unique()), figsize=(4 * res["hidden_layers"].nunique(), 3.2), squeeze=False
    )
    for ax, (k, g) in zip(axes[0], norms.groupby("hidden_layers")):
        for head, h in g.groupby("head"):
            m = h.groupby("layer")["norm"].apply(nielsen.geometric_mean)
            ax.plot(m.index, m.values, "o-", label=f"ours, {head} head")
        ax.plot(range(1, k + 1), nielsen.PUBLISHED[k], "k*--", label="Nielsen")
        ax.set(yscale="log", title=f"784-[{s['width']}]x{k}-10", xlabel="hidden layer", ylabel="||mean dC/db||")
        ax.set_xticks(range(1, k + 1))
    axes[0][0].legend(fontsize=7)
    ok = bool(res["reproduced"].all())
    body = page.render(
        """
<p><b>What was run.</b> Sigmoid nets 784-[{{ width }}]&times;k-10 for k = {{ depths }};
weights N(0, 1/n_in) (catalog <code>fan_in_normal</code>, untruncated), biases N(0, 1); seeds {{ seeds }}.
At init, the norm of the bias gradient averaged over the first {{ images }} training images, per hidden layer.
Two output heads on the same nets: <i>nielsen</i> = his sigmoid output units with per-unit cross-entropy
(numpy backward pass); <i>gradatlas</i> = our convention, linear logits with softmax cross-entropy, measured by the
project's gradient probe (<code>delta_norm</code>). The softmax head is what differs in ours: its output error is
smaller, so all our norms are about 5&times; lower, but the layer-to-layer ratios are the same.</p>
<p><b>Published</b> (one random net each): k=2: 0.07, 0.31; k=3: 0.012, 0.060, 0.283; k=4: 0.003, 0.017, 0.070, 0.285.
<b>Tolerance:</b> every adjacent-layer ratio within 3&ndash;7&times; and the first/last ratio within a factor 3 of his,
on the geometric mean over seeds (per-seed count shown).</p>
{{ table }}
{{ figure }}
{{ verdict }}
""",
        width=s["width"],
        depths=", ".join(map(str, s["hidden_layers"])),
        seeds=config["seeds"],
        images=s["images"],
        table=_table(pd.DataFrame(rows)),
        figure=_figure(fig),
        verdict=_verdict(
            ok, "all depths and both heads within tolerance" if ok else "see the rows marked not reproduced"
        ),
    )
    return body, {"reproduced": ok, "rows": res.to_dict("records")}


def transfer_section(config, inputs) -> tuple[str, dict]:
    from gradatlas.studies import transfer

    s = settings(config)
    table = pd.concat([pd.read_parquet(p) for p in inputs["variants"]], ignore_index=True)
    pre = [json.loads(Path(p).read_text()) for p in inputs["pretrain"]]
    res = transfer.assess(table)
    summ = res["summary"].reset_index()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.errorbar(summ["variant"], summ["test_accuracy"], yerr=summ["test_accuracy_sd"].fillna(0), fmt="o", capsize=4)
    for seed, g in table.groupby("seed"):
        ax.plot(g["variant"], g["test_accuracy"], ".", alpha=0.4, color="gray")
    ax.set(ylabel="test accuracy (digits 5-9)", title="task B from %d images per class" % s["per_class"])
    ax.tick_params(axis="x", rotation=20)
    ok, gain = res["reproduced"], res["gain_over_scratch"]
    low, high = gain["interval"]
    why = (
        f"{gain['outcome']}: the best reused variant, {res['best_reused']}, minus scratch is {gain['mean']:+.3f} "
        f"(SE {gain['se']:.4f}; per seed {', '.join(f'{v:+.3f}' for v in gain['per_seed'].values())}; "
        f"{gain['level']:.0%} t-interval [{low:+.3f}, {high:+.3f}]"
        f"{', which covers 0' if gain['outcome'] == 'within noise' else ''}); ranking by mean test accuracy: "
        f"{' > '.join(res['ranking'])}. Caching speeds an epoch up {res['speedup_per_epoch']:.2f}x with an accuracy "
        f"gap of {res['cached_vs_recomputed_accuracy_gap']:.4f} to recomputing"
    )
    body = page.render(
        """
<p><b>What was run.</b> A {{ depth }}&times;{{ width }} MLP ({{ initializer }}, {{ activation }}, {{ optimizer }},
batch {{ batch_size }}) trained on digits 0&ndash;4 (up to {{ pretrain_epochs }} epochs, early stopping with patience
{{ pretrain_patience }}; test accuracy on 0&ndash;4: {{ pretrain_accuracy }}). Then digits 5&ndash;9 from
{{ per_class }} training images per class (and as many validation images per class for early stopping), every variant
with the same budget: learning rate {{ learning_rate }}, patience {{ patience_steps }} steps, at most {{ max_steps }}
steps (both rounded up to whole epochs; a variant that stopped before its max epochs, in the table below, reached its
plateau), with a new 5-unit output layer over the reused hidden layers (Keras layer reuse of the loaded task-A model;
<code>trainable</code> flags): from scratch; all reused layers frozen; all but the top one / two frozen; all fine-tuned;
all frozen with their outputs cached once (<code>predict</code>) and the output layer trained on the cache.
Seeds {{ seeds }}.</p>
<p><b>Claim</b> (the course's section on reusing layers): with little data, reused pretrained layers beat training from
scratch, and caching the frozen layers' outputs makes training faster without changing the result.
<b>Tolerance:</b> the best reused variant (highest mean test accuracy) minus scratch, per seed: reproduced when the
95% Student-t interval of its mean lies above 0; an interval covering 0 is <i>within noise</i> (no ranking between
them), one below 0 puts scratch ahead. Cached vs recomputed: faster per epoch and mean accuracy gap &le; 0.01.</p>
<p><b>Context.</b> G&eacute;ron's own notebook for this exercise does not settle it either: his 2017 run had scratch
(87.2%) above every reused variant, a 2018 rerun the reverse, and his 3rd edition says transfer learning "does not work
very well with small dense networks". His solution's settings (Adam 0.01, batch 20, patience 20 epochs of 25 steps,
at most 200 epochs) are this preset's defaults.</p>
{{ summary }}
{{ figure }}
<p>Per run:</p>{{ table }}
{{ verdict }}
""",
        depth=s["depth"],
        width=s["width"],
        initializer=s["initializer"],
        activation=s["activation"],
        optimizer=s["optimizer"],
        batch_size=s["batch_size"],
        pretrain_epochs=s["pretrain_epochs"],
        pretrain_accuracy=", ".join(f"{p['test_accuracy_a']:.4f}" for p in pre),
        per_class=s["per_class"],
        pretrain_patience=s["pretrain_patience"],
        learning_rate=s["learning_rate"],
        patience_steps=s["patience_steps"],
        max_steps=s["max_steps"],
        seeds=config["seeds"],
        summary=_table(summ),
        figure=_figure(fig),
        table=_table(table),
        verdict=_verdict(ok, why),
    )
    out = {k: v for k, v in res.items() if k != "summary"} | {"summary": summ.to_dict("records")}
    return body, out


def batch_norm_section(config, inputs) -> tuple[str, dict]:
    from gradatlas.studies import batch_norm

    s = settings(config)
    curves = pd.concat([pd.read_parquet(p) for p in inputs["curves"]], ignore_index=True)
    res = batch_norm.assess(curves)
    mean = res["mean_accuracy"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.2))
    for v in mean.columns:
        axes[0].plot(mean.index, mean[v], label=v)
    axes[0].set(
        xlabel="step", ylabel="test accuracy (mean over seeds)", ylim=(max(0, mean.iloc[1:].min().min() - 0.02), 1)
    )
    axes[0].legend()
    first_seed = curves["seed"].min()
    for ax, v in zip(axes[1:3], ["plain", "batch_norm"]):
        c = curves[(curves["variant"] == v) & (curves["seed"] == first_seed)]
        for p in batch_norm.PERCENTILES:
            ax.plot(c["step"], c[f"p{p}"], label=f"{p}th")
        ax.set(title=f"{v}: sigmoid input (layer 3, unit {s['unit']})", xlabel="step")
        ax.legend(fontsize=7)
    for (v, seed), c in curves[curves["step"] > 0].groupby(["variant", "seed"]):
        axes[3].plot(
            c["step"],
            c["p85"] - c["p15"],
            color=f"C{list(mean.columns).index(v)}",
            alpha=0.7,
            label=v if seed == first_seed else None,
        )
    axes[3].set(yscale="log", title="15-85 percentile spread", xlabel="step")
    axes[3].legend(fontsize=7)
    final = (
        curves[curves["step"] == curves["step"].max()].groupby("variant")["test_accuracy"].agg(["mean", "std", "count"])
    )
    checkpoints = mean.loc[
        [i for i in mean.index if i in {s["eval_every"], 5000, 10000, 20000, 50000} or i == mean.index.max()]
    ]
    ok = res["reproduced"]
    loc, scale = res["location_drift"], res["scale_drift"]
    why = (
        f"BN ahead at {res['ahead_share']:.0%} of evaluation points (needed 100%); over the whole run the sigmoid "
        f"input's median moves {loc['batch_norm']:.2f} spreads with BN vs {loc['plain']:.2f} without (needed <= 0.5x), "
        f"and its 15-85 percentile spread changes {scale['batch_norm']:.1f}x with BN vs {scale['plain']:.0f}x without "
        f"(needed: at most the square root of the factor without)"
    )
    body = page.render(
        """
<p><b>What was run.</b> 784-100-100-100-10 sigmoid MLP, weights N(0, {{ init_stddev }}&sup2;), SGD learning rate
{{ learning_rate }}, mini-batches of {{ batch_size }}, {{ steps }} steps, with and without batch normalization
(before each sigmoid; moving averages, momentum {{ bn_momentum }}, at evaluation). Every {{ eval_every }} steps: test
accuracy (10,000 images) and the 15th/50th/85th percentiles of unit {{ unit }}'s sigmoid input in the last hidden layer
over the first {{ fixed_images }} test images (inference mode). Seeds {{ seeds }}.</p>
<p><b>Published</b> (Ioffe &amp; Szegedy 2015, &sect;4.1, Fig. 1): the BN network is ahead in test accuracy throughout
training, and the distribution of a sigmoid's input is stable with BN while it drifts without.
<b>Tolerance:</b> mean test accuracy with BN above without at every evaluation point after step 0; and, over the whole
run (every evaluation point after step 0), the distribution's location and scale each moving at most half as much with
BN as without. <i>Location drift</i>: the median's range (max &minus; min) divided by the unit's typical 15&ndash;85
percentile spread (its median over the run), mean over seeds. <i>Scale drift</i>: the largest over the smallest spread,
as a factor (geometric mean over seeds; "half" on a log scale: at most the square root of the factor without BN).
Measured this way a change of BN's learned scale &gamma; is scale, not location, and the early steps where the input
moves most are counted.
(Step 0 is left out: before training, BN's moving averages are still at their initial values.)</p>
<p>Test accuracy (mean over seeds) at a few steps:</p>{{ checkpoints }}
<p>Final test accuracy:</p>{{ final }}
<p>Drift of the tracked sigmoid input over the whole run, per seed:</p>{{ drifts }}
{{ figure }}
{{ verdict }}
""",
        init_stddev=s["init_stddev"],
        learning_rate=s["learning_rate"],
        batch_size=s["batch_size"],
        steps=s["steps"],
        bn_momentum=s["bn_momentum"],
        eval_every=s["eval_every"],
        unit=s["unit"],
        fixed_images=s["fixed_images"],
        seeds=config["seeds"],
        checkpoints=_table(checkpoints.reset_index()),
        final=_table(final.reset_index()),
        drifts=_table(res["per_seed"], digits=3),
        figure=_figure(fig),
        verdict=_verdict(ok, why),
    )
    out = {k: v for k, v in res.items() if k not in ("mean_accuracy", "per_seed")}
    return body, out | {"final": final.reset_index().to_dict("records"), "per_seed": res["per_seed"].to_dict("records")}


def depth_init_section(config, inputs) -> tuple[str, dict]:
    from gradatlas.studies import depth_init

    s = settings(config)
    runs, diag, curves = (pd.read_parquet(inputs[k]) for k in ("runs", "diagnostics", "curves"))
    res = depth_init.assess(runs, diag, s["ratio_factor"], s["slower_factor"], s["accuracy_gap"])
    prof = res["profile"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for init, g in prof.groupby("initializer"):
        m = g.groupby("layer")["act_std"].apply(lambda v: float(np.exp(np.log(v).mean())))
        line = axes[0].plot(m.index, m.values, "o-", ms=3, label=f"{init} (measured)")[0]
        gain = depth_init.PREDICTED_GAIN.get(init, np.nan)
        axes[0].plot(
            m.index, m.iloc[0] * gain ** ((m.index - 1) / 2), "--", color=line.get_color(), label=f"{init} predicted"
        )
    axes[0].set(yscale="log", xlabel="hidden layer", ylabel="activation std at init", title="forward signal at init")
    axes[0].legend(fontsize=7)
    for (init, seed), g in curves.groupby(["initializer", "seed"]):
        axes[1].plot(
            g["epoch"],
            g["val_accuracy"],
            color="C0" if init == res["glorot"] else "C1",
            alpha=0.7,
            label=init if seed == curves["seed"].min() else None,
        )
    axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="training")
    axes[1].legend(fontsize=7)
    fwd = pd.DataFrame(
        [
            {
                "initializer": k,
                "std(L)/std(1) measured": v["ratio"],
                "predicted": v["predicted"],
                "within factor": s["ratio_factor"],
                "ok": v["ok"],
            }
            for k, v in res["forward"].items()
        ]
    )
    ok = res["reproduced"]
    t = res["training"].set_index("initializer")
    why = (
        f"{res['he']}: {t.loc[res['he'], 'converged']}/{t.loc[res['he'], 'seeds']} seeds converged, test accuracy "
        f"{t.loc[res['he'], 'test_accuracy']:.3f}; {res['glorot']}: {t.loc[res['glorot'], 'converged']} converged, "
        f"test accuracy {t.loc[res['glorot'], 'test_accuracy']:.3f}; forward std ratios "
        + "; ".join(f"{k} {v['ratio']:.2e} vs predicted {v['predicted']:.2e}" for k, v in res["forward"].items())
    )
    g = config["grid"]
    body = page.render(
        """
<p><b>What was run.</b> The grid of this preset (runs, tables and <a href="index.html">the main report</a>): a
{{ depth }}&times;{{ width }} MLP, activation
{{ activations }}, initializers {{ initializers }}, optimizer {{ optimizers }}, {{ epochs }}
epochs, seeds {{ seeds }}. Forward activation std per hidden layer at init from the diagnostics probe (step 0).</p>
<p><b>Published</b> (He et al. 2015, for a 30-layer ReLU net): with their init it converges, with Xavier/Glorot it
stalls; the forward signal under Glorot shrinks by 2<sup>&minus;1/2</sup> per ReLU layer (std ratio
2<sup>&minus;(L&minus;1)/2</sup> from layer 1 to L) and stays constant under He. <b>Tolerance:</b> measured std ratio
(geometric mean over seeds) within a factor {{ ratio_factor }} of the prediction for both; He converges for every seed
while Glorot stalls, needs &ge;{{ slower_factor }}&times; the epochs to {{ target }} validation accuracy, or ends
&gt;{{ accuracy_gap }} lower.</p>
{{ forward }}
{{ training }}
{{ figure }}
{{ verdict }}
""",
        depth=res["depth"],
        width=g["width"][0] if "width" in g else config["model"]["width"],
        activations=", ".join(g["activation"]),
        initializers=", ".join(g["initializer"]),
        optimizers=", ".join(g["optimizer"]),
        epochs=config["train"]["epochs"],
        seeds=config["seeds"],
        ratio_factor=s["ratio_factor"],
        slower_factor=s["slower_factor"],
        target=config["train"]["target_accuracy"],
        accuracy_gap=s["accuracy_gap"],
        forward=_table(fwd),
        training=_table(res["training"]),
        figure=_figure(fig),
        verdict=_verdict(ok, why),
    )
    out = {k: v for k, v in res.items() if k not in ("training", "profile")} | {
        "training": res["training"].to_dict("records")
    }
    return body, out


SECTIONS = {
    "nielsen": ("Vanishing gradients at init (Nielsen, Neural Networks and Deep Learning, ch. 5)", nielsen_section),
    "transfer": ("Transfer learning: frozen, fine-tuned and cached reused layers", transfer_section),
    "batch_norm": ("Batch normalization (Ioffe & Szegedy 2015, §4.1)", batch_norm_section),
    "depth_init": ("Initialization at depth (He et al. 2015, for MLPs)", depth_init_section),
}
assert tuple(SECTIONS) == PRESETS, "gradatlas.studies.PRESETS and the study report's sections disagree"

STYLE = page.CSS + """table.t{font-size:12px}table.t td,table.t th{padding:2px 8px}"""


def render(config: dict, inputs: dict, html_out: Path, verdict_out: Path) -> dict:
    """Write the preset's page and verdict; returns the verdict record."""
    name = settings(config)["name"]
    title, section = SECTIONS[name]
    body, result = section(config, inputs)
    intro = page.render(
        "<p>Study <code>{{ study }}</code>; reproduce with <code>{{ command }}</code> (plus "
        "<code>--config 'data={source: idx, path: ...}'</code> offline). Generated {{ when }} UTC.</p>",
        study=config.get("study", ""),
        command=COMMANDS[name],
        when=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
    )
    html_text = page.page(
        title,
        f"Study preset: {title}",
        [{"key": name, "title": "", "blocks": [body]}],
        intro=[intro],
        nav=False,
        css=STYLE,
    )
    Path(html_out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(html_out), lambda p: p.write_text(html_text))
    record = {
        "preset": name,
        "title": title,
        "verdict": verdict_word(result["reproduced"]),
        "seeds": config["seeds"],
        **result,
    }
    write_json(Path(verdict_out), json.loads(json.dumps(record, default=jsonable)))
    return {"preset": name, "verdict": record["verdict"]}
