"""Per-layer gradient and activation diagnostics, recorded by a Keras callback.

On a fixed probe batch, at step 0 (before any update), at a few early steps and at the end of
every epoch, for every Dense layer l (1 = nearest the input, the output layer last):

- grad_w_norm   ||dL/dW_l||_F
- delta_norm    ||mean over the batch of dL_i/dz_l|| (equals the bias-gradient norm without BN)
- delta_rms     root mean square of the per-sample error signal dL_i/dz_l
- weight_norm   ||W_l||_F
- update_ratio  ||W_l(t) - W_l(previous probe)|| / ||W_l(previous probe)||
- act_mean, act_std   of the block's output (the logits for the output layer)
- saturated_frac  share of (sample, unit) pairs where the activation's derivative is below 5% of
                  its maximum (ReLU family: where the unit is inactive)
- dead_frac       share of units whose derivative is ~0 for every probe sample
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from gradatlas import backend, catalog
from gradatlas.files import atomic_write

SATURATION_LEVEL = 0.05  # of the derivative's maximum
DEAD_LEVEL = 1e-3  # "~0": below this fraction of the derivative's maximum
COLUMNS = [
    "step", "epoch", "phase", "layer", "layer_kind", "units", "grad_w_norm", "delta_norm", "delta_rms",
    "weight_norm", "update_ratio", "act_mean", "act_std", "saturated_frac", "dead_frac",
]  # fmt: skip


def layer_statistics(
    records, dz, dW, weights, previous_weights, activation: str, act_params: dict, slopes=None
) -> list[dict]:
    """The per-layer rows of one probe, from the arrays `backend.probe_gradients` returns.

    `slopes[k]` is the activation's derivative at hidden layer k's input u, when the probe has
    already computed it (None: computed here).
    """
    act = catalog.ACTIVATIONS[activation]
    n = len(dz[0])
    rows = []
    for index, (rec, delta, grad_w, w) in enumerate(zip(records, dz, dW, weights)):
        is_output = index == len(records) - 1
        row = {
            "layer": index + 1,
            "layer_kind": "output" if is_output else "hidden",
            "units": w.shape[1],
            "grad_w_norm": float(np.linalg.norm(grad_w)),
            # dL/dz of the mean loss carries a 1/n; the sum over the batch is the mean per-sample signal
            "delta_norm": float(np.linalg.norm(delta.sum(axis=0))),
            "delta_rms": float(np.sqrt(np.mean((delta * n) ** 2))),
            "weight_norm": float(np.linalg.norm(w)),
            "update_ratio": np.nan,
            "act_mean": float(rec["a"].mean()),
            "act_std": float(rec["a"].std()),
            "saturated_frac": np.nan,
            "dead_frac": np.nan,
        }
        if previous_weights is not None:
            before = previous_weights[index]
            row["update_ratio"] = float(np.linalg.norm(w - before) / max(np.linalg.norm(before), 1e-30))
        if not is_output:
            u = rec["u"]
            if slopes is not None:
                slope = slopes[index]
            else:
                slope = keras.ops.convert_to_numpy(act.derivative(keras.ops.convert_to_tensor(u), act_params))
            peak = act.max_derivative(act_params)
            flat = u < 0 if act.inactive_is_saturated else slope < SATURATION_LEVEL * peak
            row["saturated_frac"] = float(flat.mean())
            row["dead_frac"] = float(np.all(np.abs(slope) < DEAD_LEVEL * peak, axis=0).mean())
        rows.append(row)
    return rows


class Diagnostics(keras.callbacks.Callback):
    """Probes the model at step 0, at `early_steps` and at every epoch end.

    The probe runs in inference mode on a fixed batch and draws no random numbers, so it changes
    neither the weights nor the training's RNG streams. `rows` survive a restart: the training
    passes in the rows journalled before the interruption.
    """

    def __init__(self, x_probe, y_probe, activation, act_params, early_steps, steps_per_epoch, rows=None, journal=None):
        super().__init__()
        self.x, self.y = x_probe, y_probe
        self.activation, self.act_params = activation, act_params
        self.steps_per_epoch = steps_per_epoch
        self.rows = list(rows or [])
        self.pending = sorted(early_steps)
        self.previous_weights = None
        self.seconds = 0.0  # time spent probing, to report the probe's cost
        self.journal = journal
        self.epoch_start_step = 0
        act = catalog.ACTIVATIONS[activation]
        self._derivative = lambda u: act.derivative(u, act_params)  # compiled into the probe

    def probe(self, step: int, phase: str) -> None:
        start = time.perf_counter()
        records, dz, dW, weights, slopes = backend.probe(self.model, self.x, self.y, self._derivative)
        stats = layer_statistics(
            records, dz, dW, weights, self.previous_weights, self.activation, self.act_params, slopes
        )
        for row in stats:
            row.update(step=step, epoch=step / self.steps_per_epoch, phase=phase)
        self.rows.extend(stats)
        self.previous_weights = weights
        self.seconds += time.perf_counter() - start

    def _dense(self):
        from gradatlas.model import dense_layers

        return dense_layers(self.model)

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        # after every on_train_begin, so a restored training is seen with its restored weights
        step = self.epoch_start_step = self._step()
        self.pending = [s for s in self.pending if s > step]
        if step == 0 and not self.rows:
            self.probe(0, "init")

    def on_train_batch_end(self, batch, logs=None):
        if self.pending:
            # counted, not read from the optimizer: no device sync per batch (and under JAX the
            # optimizer's variables are not up to date inside an epoch); `batch` is the last
            # step of the execution, capped at the epoch's length
            step = self.epoch_start_step + min(batch + 1, self.steps_per_epoch)
            if step >= self.pending[0]:
                self.pending = [s for s in self.pending if s > step]
                self.probe(step, "early")

    def on_epoch_end(self, epoch, logs=None):
        self.probe(self._step(), "epoch")
        if self.journal is not None:
            atomic_write(self.journal, lambda p: self.frame().to_parquet(p, index=False))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)
