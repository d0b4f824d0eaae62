"""The pack's compiled programs: pure per-member functions, vectorized over the members and
compiled in one place (`compile`).

Every function here is pure, values in and values out. `Graph` is what they share: the template
network and optimizer (every member runs their stateless calls on its own values) and what the
members of a pack hold equal. Per member `h` holds its technique scalars (`member_scalars`; 0 or
inf: off); a technique no member of the pack uses is left out of the graph (`Graph.uses`): the
same results, as its off value is exact (+ 0, where(inf)), with less work per step.

- `member_step`: one optimizer step on a batch, with the per-member penalty, clipping and
  constraint, the divergence guard (a non-finite or exploded loss freezes the member at its last
  finite values) and the epoch's running (loss sum, correct, count);
- `member_evaluate`: (loss sum, correct, penalty) on a chunk of evaluation data;
- `member_lr`: the optimizer's learning rate at its current iteration;
- the probe: `diagnostics.probe_program`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import keras
import numpy as np
from keras import ops

from gradatlas import backend, catalog, diagnostics
from gradatlas.state import Train

EXPLODED_LOSS = 1e6  # a loss above this counts as diverged, like NaN (ln 10 = 2.3 is a uniform guess)
EVAL_CHUNK = 1000  # samples per evaluation batch
L1, L2 = keras.regularizers.L1(1.0), keras.regularizers.L2(1.0)


def member_scalars(spec) -> dict:
    """The per-member technique scalars (0 or inf: off): the regularizer's, as its catalog entry
    gives them, and gradient clipping."""
    return catalog.member_scalars(spec.regularizer, spec.regularizer_params) | {
        "clipnorm": math.inf if spec.clipnorm is None else float(spec.clipnorm),
        "clipvalue": math.inf if spec.clipvalue is None else float(spec.clipvalue),
    }


@dataclass(frozen=True, eq=False)
class Graph:
    """What the programs of a pack close over."""

    model: object  # the template network
    optimizer: object  # the template optimizer, built on the network's trainable variables
    apply_step: Callable  # backend.optimizer_step of the two
    kernels: tuple  # the Dense kernels' indices among the trainable variables
    uses: dict  # technique -> whether any member uses it
    batch: int
    full_steps: int  # full batches per epoch

    @classmethod
    def of(cls, model, optimizer, scalars: dict, batch: int, full_steps: int) -> "Graph":
        uses = {name: bool(np.any(np.isfinite(v) & (v != 0))) for name, v in scalars.items()}
        apply_step = backend.optimizer_step(optimizer, model.trainable_variables)
        return cls(model, optimizer, apply_step, tuple(diagnostics.kernel_index(model)), uses, batch, full_steps)


def select(keep, new, old) -> list:
    """`new` where `keep`, else `old`, leaf by leaf; `keep` is one member's bool (under vmap) or
    the pack's (K,), broadcast over each leaf's trailing axes."""

    def expand(o):
        rank = len(keep.shape)
        return keep if rank in (0, len(o.shape)) else ops.reshape(keep, (-1,) + (1,) * (len(o.shape) - rank))

    return [ops.where(expand(o), n, o) for n, o in zip(new, old)]


def penalty(g: Graph, tv, h):
    # l1 * L1(1)(W) + l2 * L2(1)(W) = Keras' L1L2(l1, l2)(W), per member factors
    total = 0.0
    for i in g.kernels:
        if g.uses["l1"]:
            total = total + h["l1"] * L1(tv[i])
        if g.uses["l2"]:
            total = total + h["l2"] * L2(tv[i])
    return total


def data_loss(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def clip(g: Graph, grads, h) -> list:
    # Keras' clipnorm (per variable) or clipvalue; inf means off, selected without arithmetic
    out = []
    for grad in grads:
        if g.uses["clipnorm"]:
            norm = ops.sqrt(ops.sum(ops.square(grad)))
            by_norm = grad * h["clipnorm"] / ops.maximum(norm, h["clipnorm"])
            grad = ops.where(ops.isfinite(h["clipnorm"]), by_norm, grad)
        if g.uses["clipvalue"]:
            grad = ops.clip(grad, -h["clipvalue"], h["clipvalue"])
        out.append(grad)
    return out


def constrain(g: Graph, tv, h) -> list:
    out = list(tv)
    for i in g.kernels if g.uses["max_norm"] else ():
        bounded = keras.constraints.MaxNorm(max_value=h["max_norm"])(tv[i])
        out[i] = ops.where(ops.isfinite(h["max_norm"]), bounded, tv[i])
    return out


def member_step(g: Graph, train: Train, h, active, sums, x, y):
    """One step of one member -> (train, active, tripped, sums); a member not `active` keeps its
    values and adds nothing to `sums`."""
    tv, ntv, ov = train

    def loss_fn(tv):
        logits, new_ntv = g.model.stateless_call(tv, ntv, x, training=True)
        return ops.mean(data_loss(y, logits)) + penalty(g, tv, h), (new_ntv, logits)

    (loss, (new_ntv, logits)), grads = backend.value_and_grad(loss_fn)(tv)
    new_tv, new_ov = g.apply_step(ov, clip(g, grads, h), tv)
    new_tv = constrain(g, new_tv, h)
    tripped = ops.logical_not(ops.isfinite(loss)) | (loss > EXPLODED_LOSS)
    keep = active & ops.logical_not(tripped)
    n = ops.cast(ops.shape(y)[0], "float32")
    correct = ops.sum(ops.cast(ops.argmax(logits, axis=-1) == y, "float32"))
    zero = ops.zeros_like(loss)
    sums = sums + ops.stack(
        [ops.where(active, loss * n, zero), ops.where(active, correct, zero), ops.where(active, n, zero)]
    )
    # a frozen member never steps again: its optimizer state needs no freezing
    return Train(select(keep, new_tv, tv), select(keep, new_ntv, ntv), new_ov), keep, active & tripped, sums


def member_evaluate(g: Graph, tv, ntv, h, x, y, mask):
    logits, _ = g.model.stateless_call(tv, ntv, x, training=False)
    loss = ops.sum(data_loss(y, logits) * mask)
    correct = ops.sum(ops.cast(ops.argmax(logits, axis=-1) == y, "float32") * mask)
    return ops.stack([loss, correct, penalty(g, tv, h)])


def member_lr(g: Graph, ov):
    with keras.StatelessScope(state_mapping=list(zip(g.optimizer.variables, ov))):
        return ops.cast(g.optimizer.learning_rate, "float32")


def pack_steps(g: Graph, pack_step, train, hyper, active, order, start, stop, x_train, y_train):
    """Full batches start..stop-1 of the epoch whose per-member sample order is `order`, in one
    compiled loop -> (train, active, tripped, sums)."""
    k = ops.shape(order)[0]

    def body(i, carry):
        train, active, tripped, sums = carry
        idx = ops.slice(order, (0, i * g.batch), (k, g.batch))
        x, y = ops.take(x_train, idx, axis=0), ops.take(y_train, idx, axis=0)
        train, active, trip, sums = pack_step(train, hyper, active, sums, x, y)
        return train, active, tripped | trip, sums

    return ops.fori_loop(start, stop, body, (train, active, ops.zeros((k,), dtype="bool"), ops.zeros((k, 3))))


def pack_last_step(g: Graph, pack_step, train, hyper, active, order, x_train, y_train):
    """The epoch's last, partial batch -> (train, active, tripped, sums)."""
    idx = order[:, g.full_steps * g.batch :]
    x, y = ops.take(x_train, idx, axis=0), ops.take(y_train, idx, axis=0)
    return pack_step(train, hyper, active, ops.zeros((ops.shape(order)[0], 3)), x, y)


class Programs(NamedTuple):
    steps: Callable  # (train, hyper, active, order, start, stop, x, y) -> (train, active, tripped, sums)
    last_step: Callable  # (train, hyper, active, order, x, y) -> the same
    evaluate_chunk: Callable  # (tv, ntv, hyper, x, y, mask) -> (K, 3)
    probe: Callable  # (tv, ntv, previous kernels, x, y) -> diagnostics.probe_program's
    lr: Callable  # (optimizer values) -> (K,)


def compile(g: Graph, spec) -> Programs:
    """The pack's programs (the data are arguments, not constants: they stay small and cacheable);
    `spec` gives the probe its activation."""
    pack_step = backend.vmap(partial(member_step, g))
    return Programs(
        steps=backend.jit(partial(pack_steps, g, pack_step)),
        last_step=backend.jit(partial(pack_last_step, g, pack_step)),
        evaluate_chunk=backend.jit(backend.vmap(partial(member_evaluate, g), in_axes=(0, 0, 0, None, None, None))),
        probe=backend.jit(diagnostics.probe_program(g.model, list(g.kernels), spec)),
        lr=backend.jit(backend.vmap(partial(member_lr, g))),
    )


def chunks(x: np.ndarray, y: np.ndarray):
    """Evaluation data as (chunks, EVAL_CHUNK, ...) plus a mask for the padding."""
    n = len(x)
    count = -(-n // EVAL_CHUNK)
    pad = count * EVAL_CHUNK - n
    xs = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(count, EVAL_CHUNK, -1)
    ys = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(count, EVAL_CHUNK)
    mask = (np.arange(count * EVAL_CHUNK) < n).astype("float32").reshape(count, EVAL_CHUNK)
    return tuple(ops.convert_to_tensor(a) for a in (xs, ys, mask))


def evaluate(programs: Programs, weights, hyper, data) -> np.ndarray:
    """(K, 2): each member's loss (with its penalty, as Keras reports it) and accuracy on `data`
    (`chunks`); one compiled chunk program serves the validation and test sets alike."""
    tv, ntv = weights
    xs, ys, mask = data
    totals = sum(
        ops.convert_to_numpy(programs.evaluate_chunk(tv, ntv, hyper, xs[i], ys[i], mask[i])).astype("float64")
        for i in range(xs.shape[0])
    )
    n = float(ops.convert_to_numpy(ops.sum(mask)))
    penalty_ = totals[:, 2] / xs.shape[0]
    return np.stack([totals[:, 0] / n + penalty_, totals[:, 1] / n], axis=1)
