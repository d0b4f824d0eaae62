"""Study presets: ready studies (`studies/*.yaml`) that reproduce published results and say whether
our numbers agree with them, by a stated tolerance.

One module per study, each with the library functions its Snakemake rules call, and a
`section(...)` that turns the study's outputs into a report section with a computed verdict:

- `nielsen`     vanishing gradients at init (Nielsen, Neural Networks and Deep Learning, ch. 5)
- `transfer`    transfer learning with frozen, fine-tuned and cached reused layers
- `batch_norm`  batch normalization (Ioffe & Szegedy 2015, section 4.1)
- `depth_init`  He vs Glorot initialization at depth (He et al. 2015), on the main grid's runs

`report.render` writes the self-contained page `results/<study>/report/study.html`.
"""

PRESETS = ("nielsen", "transfer", "batch_norm", "depth_init")


def settings(config: dict) -> dict:
    """The active preset's settings (schema-validated, defaults filled in), with its name."""
    preset = config.get("preset")
    if not preset:
        raise ValueError("config has no `preset:` section; run a study preset with --configfile studies/<name>.yaml")
    return {"name": preset["name"], **preset.get(preset["name"], {})}


def verdict_word(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"
