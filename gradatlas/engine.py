"""The training engine: a pack of K runs that share one compiled graph, trained as one program.

A pack of one is a single training; there is no other training loop. Keras 3 defines each
member's network, initializers, optimizer, regularizers and constraints; the engine stacks the K
members' variables along a leading axis and runs `model.stateless_call` and
`optimizer.stateless_apply` under `backend.vmap`, the steps between two probes in one compiled loop.

What members of one pack may differ in (`packs.graph_key` holds the rest equal): seed (initial
weights, batch order, dropout masks), initializer, learning rate (constant schedule), clipnorm /
clipvalue, and the scalars of l1 / l2 / l1_l2 / dropout / max_norm, where 0 (or inf) means off.

Per member, as in a lone run: early stopping on validation accuracy with the best weights restored
(a stopped member is frozen: its variables stop changing, the others go on); the divergence guard
(a step whose loss is non-finite or above EXPLODED_LOSS freezes the member at its last finite
weights and records it `diverged`; vectorized members never mix, so no other member is affected);
the diagnostics probe; TensorBoard event files; the run folder.

Resume: at every epoch end the whole pack state (all variables, best weights, journals) is written
atomically to `<pack_dir>/state.npz` (the previous one kept); a killed pack rerun resumes there and,
on CPU with the same programs, ends bit-identical to an uninterrupted one.

Flow: prepare (data, members) -> build (stacked variables, compiled programs) -> train (epochs:
segments of steps between probes, validation, early stopping, backup) -> evaluate -> write.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gradatlas import backend, catalog, data, diagnostics, provenance, rundir
from gradatlas.files import jsonable
from gradatlas.outcomes import bn_moving_average_left, bn_steps_needed
from gradatlas.rundir import HISTORY_COLUMNS, RUN_FILES, summarize  # noqa: F401 (their old home)
from gradatlas.spec import RunSpec
from gradatlas.tensorboard import RunLog

log = logging.getLogger("gradatlas.engine")
# one line per pack epoch, short enough for the console (scripts/train.py shows it on the job's stderr)
progress_log = logging.getLogger("gradatlas.engine.progress")

EXPLODED_LOSS = 1e6  # a loss above this counts as diverged, like NaN (ln 10 = 2.3 is a uniform guess)
EVAL_CHUNK = 1000  # samples per evaluation batch
BACKUP, PREVIOUS_BACKUP = "state.npz", "state.prev.npz"


@dataclass(frozen=True)
class Member:
    """One run of a pack: its spec, its grid cell (the run folder's keys, seed included) and its folder."""

    spec: RunSpec
    cell: dict
    run_dir: Path


class Hooks:
    """Extra behaviour injected by callers (study presets, benchmarks, tests); no-ops here.

    `engine` is the running `Pack`; its `progress` (per member) and `state` (stacked variables) are readable.
    """

    def on_segment_end(self, engine: "Pack", epoch: int, step: int) -> None: ...

    def on_epoch_end(self, engine: "Pack", epoch: int) -> None: ...

    def on_backup(self, engine: "Pack", epoch: int, stage: str) -> None: ...

    def on_output(self, engine: "Pack", member: int, stage: str) -> None: ...


@dataclass
class Progress:
    """The host-side record of one member: what its run folder will hold, journalled in backups."""

    history: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    best_value: float = -math.inf
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False
    diverged: bool = False
    probe_seconds: float = 0.0


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of epoch `epoch` (0-based): a function of (seed, epoch) only, so a member
    sees the same batches alone, in any pack, and after a resume."""
    return np.random.default_rng([seed, epoch, 0x6A7A]).permutation(n).astype(np.int32)


def member_scalars(spec: RunSpec) -> dict:
    """The per-member technique scalars (0 or inf: off): the regularizer's, as its catalog entry
    gives them, and gradient clipping."""
    return catalog.member_scalars(spec.regularizer, spec.regularizer_params) | {
        "clipnorm": math.inf if spec.clipnorm is None else float(spec.clipnorm),
        "clipvalue": math.inf if spec.clipvalue is None else float(spec.clipvalue),
    }


class Pack:
    """K members trained as one program. `run()` trains them and writes their run folders."""

    def __init__(self, members: list[Member], source, pack_dir: Path, threads: int = 1, hooks=(), build=None):
        """`source`: the prepared-data folder, or a `data.Split` (study presets that train on other
        inputs); `build(spec, packed=True, dropout=...)`: the members' network (default `model.build`)."""
        import keras

        from gradatlas import model as gmodel

        build = build or gmodel.build
        self.build = build

        self.members, self.pack_dir, self.hooks = list(members), Path(pack_dir), list(hooks)
        self.threads = threads
        self.specs = [m.spec for m in self.members]
        first = self.specs[0]
        backend.require(first.backend)
        if len(self.members) > 1 and not backend.packs(first.backend):
            raise ValueError(f"train.backend = {first.backend!r} trains one run per pack, not {len(self.members)}")
        backend.configure(first.seed)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")

        # --- prepare: data shared by the pack
        if isinstance(source, data.Split):
            split = source
        else:
            split = data.split(data.open_prepared(source), first.validation_size, first.train_subset)
        self.split = split
        self.n_train, self.batch_size = len(split.x_train), first.batch_size
        self.full_steps, self.remainder = divmod(self.n_train, self.batch_size)
        self.steps_per_epoch = self.full_steps + (1 if self.remainder else 0)
        warn_unsettled_batch_norm(self.specs, self.steps_per_epoch)
        ops = keras.ops
        self.x_train, self.y_train = ops.convert_to_tensor(split.x_train), ops.convert_to_tensor(split.y_train)
        self.val = self._chunks(split.x_val, split.y_val)
        self.test = self._chunks(split.x_test, split.y_test)
        self.x_probe = ops.convert_to_tensor(split.x_train[: first.probe_size])
        self.y_probe = ops.convert_to_tensor(split.y_train[: first.probe_size])

        # --- build: one Keras model per member (its own seeded initial weights), stacked
        scalars = [member_scalars(s) for s in self.specs]
        has_dropout = any(catalog.regularization(s.regularizer, s.regularizer_params).dropout_rate > 0 for s in self.specs)
        models = [build(s, packed=True, dropout=has_dropout) for s in self.specs]
        self.model = models[0]  # the template whose stateless calls every member runs
        self.units = [layer.units for layer in gmodel.dense_layers(self.model)]
        self.kernels = diagnostics.kernel_index(self.model)  # the Dense kernels among the trainable variables
        self.optimizer = self._optimizer(first)
        self.optimizer.build(self.model.trainable_variables)
        lr_index = next(
            (i for i, v in enumerate(self.optimizer.variables) if v is getattr(self.optimizer, "_learning_rate", None)),
            None,
        )
        opt_init = [np.asarray(ops.convert_to_numpy(v)) for v in self.optimizer.variables]

        def stack(arrays):
            return ops.convert_to_tensor(np.stack(arrays))

        self.state = {
            "tv": [stack([ops.convert_to_numpy(m.trainable_variables[i]) for m in models]) for i in range(len(self.model.trainable_variables))],
            "ntv": [stack([ops.convert_to_numpy(m.non_trainable_variables[i]) for m in models]) for i in range(len(self.model.non_trainable_variables))],
            "ov": [stack([self._member_opt_value(v, i, s, lr_index) for s in self.specs]) for i, v in enumerate(opt_init)],
        }
        self.state["best_tv"] = list(self.state["tv"])
        self.state["best_ntv"] = list(self.state["ntv"])
        # the kernels at the last probe, for the update ratio (after a resume: the restored ones, as
        # every backup follows an epoch-end probe)
        self.previous_kernels = [self.state["tv"][i] for i in self.kernels]
        self.scalars = {k: np.array([s[k] for s in scalars], dtype="float32") for k in scalars[0]}
        self.hyper = {k: ops.convert_to_tensor(v) for k, v in self.scalars.items()}
        self.active = np.ones(len(self.members), dtype=bool)
        self.progress = [Progress() for _ in self.members]
        self.epoch = 0
        self.resumed_from = 0
        self._compile()
        self.tensorboard = [RunLog(self.pack_dir / f"tensorboard-{i}") for i in range(len(self.members))]

    # --- build helpers ---------------------------------------------------------------------------
    def _optimizer(self, spec: RunSpec):
        # clipping is applied per member by the engine (the optimizer's clip options are floats)
        schedule = catalog.lr_schedule(
            spec.lr_schedule, spec.lr_schedule_params, spec.learning_rate, self.steps_per_epoch, spec.epochs
        )
        return catalog.optimizer(spec.optimizer, spec.optimizer_params, schedule)

    @staticmethod
    def _member_opt_value(initial: np.ndarray, index: int, spec: RunSpec, lr_index):
        if index == lr_index:
            return np.asarray(spec.learning_rate, dtype=initial.dtype)
        return initial

    def _evaluate(self, tv, ntv, hyper, xs, ys, mask) -> np.ndarray:
        """(K, 2): each member's loss (with its penalty, as Keras reports it) and accuracy; one
        compiled chunk program serves the validation and test sets alike."""
        import keras

        totals = sum(
            keras.ops.convert_to_numpy(self._evaluate_chunk(tv, ntv, hyper, xs[i], ys[i], mask[i])).astype("float64")
            for i in range(xs.shape[0])
        )
        n = float(keras.ops.convert_to_numpy(keras.ops.sum(mask)))
        penalty = totals[:, 2] / xs.shape[0]
        return np.stack([totals[:, 0] / n + penalty, totals[:, 1] / n], axis=1)

    def _chunks(self, x: np.ndarray, y: np.ndarray):
        """Evaluation data as (chunks, EVAL_CHUNK, ...) plus a mask for the padding."""
        import keras

        n = len(x)
        chunks = -(-n // EVAL_CHUNK)
        pad = chunks * EVAL_CHUNK - n
        xs = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(chunks, EVAL_CHUNK, -1)
        ys = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(chunks, EVAL_CHUNK)
        mask = (np.arange(chunks * EVAL_CHUNK) < n).astype("float32").reshape(chunks, EVAL_CHUNK)
        return tuple(keras.ops.convert_to_tensor(a) for a in (xs, ys, mask))

    # --- the compiled programs ---------------------------------------------------------------------
    def _compile(self) -> None:
        import keras

        ops = keras.ops
        model, optimizer = self.model, self.optimizer
        kernels = self.kernels
        batch = self.batch_size
        regularizers = (keras.regularizers.L1(1.0), keras.regularizers.L2(1.0))
        apply_step = backend.optimizer_step(optimizer, model.trainable_variables)
        # a technique no member uses is left out of the graph: the same results (its off value is
        # exact: + 0, where(inf)), less work per step
        uses = {name: bool(np.any(np.isfinite(v) & (v != 0))) for name, v in self.scalars.items()}

        def penalty(tv, h):
            # l1 * L1(1)(W) + l2 * L2(1)(W) = Keras' L1L2(l1, l2)(W), per member factors
            total = 0.0
            for i in kernels:
                if uses["l1"]:
                    total = total + h["l1"] * regularizers[0](tv[i])
                if uses["l2"]:
                    total = total + h["l2"] * regularizers[1](tv[i])
            return total

        def data_loss(y, logits):
            return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

        def clip(grads, h):
            # Keras' clipnorm (per variable) or clipvalue; inf means off, selected without arithmetic
            out = []
            for g in grads:
                if uses["clipnorm"]:
                    norm = ops.sqrt(ops.sum(ops.square(g)))
                    by_norm = g * h["clipnorm"] / ops.maximum(norm, h["clipnorm"])
                    g = ops.where(ops.isfinite(h["clipnorm"]), by_norm, g)
                if uses["clipvalue"]:
                    g = ops.clip(g, -h["clipvalue"], h["clipvalue"])
                out.append(g)
            return out

        def constrain(tv, h):
            out = list(tv)
            for i in kernels if uses["max_norm"] else ():
                bounded = keras.constraints.MaxNorm(max_value=h["max_norm"])(tv[i])
                out[i] = ops.where(ops.isfinite(h["max_norm"]), bounded, tv[i])
            return out

        def select(keep, new, old):
            return [ops.where(keep, n, o) for n, o in zip(new, old)]

        def member_step(tv, ntv, ov, h, active, sums, x, y):
            def loss_fn(tv):
                logits, new_ntv = model.stateless_call(tv, ntv, x, training=True)
                return ops.mean(data_loss(y, logits)) + penalty(tv, h), (new_ntv, logits)

            (loss, (new_ntv, logits)), grads = backend.value_and_grad(loss_fn)(tv)
            new_tv, new_ov = apply_step(ov, clip(grads, h), tv)
            new_tv = constrain(new_tv, h)
            tripped = ops.logical_not(ops.isfinite(loss)) | (loss > EXPLODED_LOSS)
            keep = active & ops.logical_not(tripped)
            n = ops.cast(ops.shape(y)[0], "float32")
            correct = ops.sum(ops.cast(ops.argmax(logits, axis=-1) == y, "float32"))
            zero = ops.zeros_like(loss)
            sums = sums + ops.stack([ops.where(active, loss * n, zero), ops.where(active, correct, zero), ops.where(active, n, zero)])
            return (
                select(keep, new_tv, tv),
                select(keep, new_ntv, ntv),
                new_ov,  # a frozen member never steps again: its optimizer state needs no freezing
                keep,
                active & tripped,
                sums,
            )

        pack_step = backend.vmap(member_step, in_axes=(0, 0, 0, 0, 0, 0, 0, 0))

        def steps(tv, ntv, ov, hyper, active, order, start, stop, x_train, y_train):
            """Full batches start..stop-1 of the epoch whose per-member sample order is `order`."""
            k = ops.shape(order)[0]
            sums = ops.zeros((k, 3))
            tripped = ops.zeros((k,), dtype="bool")

            def body(i, carry):
                tv, ntv, ov, active, tripped, sums = carry
                idx = ops.slice(order, (0, i * batch), (k, batch))
                x, y = ops.take(x_train, idx, axis=0), ops.take(y_train, idx, axis=0)
                tv, ntv, ov, active, trip, sums = pack_step(tv, ntv, ov, hyper, active, sums, x, y)
                return tv, ntv, ov, active, tripped | trip, sums

            return ops.fori_loop(start, stop, body, (tv, ntv, ov, active, tripped, sums))

        def last_step(tv, ntv, ov, hyper, active, order, x_train, y_train):
            """The epoch's last, partial batch."""
            k = ops.shape(order)[0]
            idx = order[:, self.full_steps * batch :]
            x, y = ops.take(x_train, idx, axis=0), ops.take(y_train, idx, axis=0)
            tv, ntv, ov, active, trip, sums = pack_step(tv, ntv, ov, hyper, active, ops.zeros((k, 3)), x, y)
            return tv, ntv, ov, active, trip, sums

        def member_evaluate(tv, ntv, h, x, y, mask):
            logits, _ = model.stateless_call(tv, ntv, x, training=False)
            loss = ops.sum(data_loss(y, logits) * mask)
            correct = ops.sum(ops.cast(ops.argmax(logits, axis=-1) == y, "float32") * mask)
            return ops.stack([loss, correct, penalty(tv, h)])

        def member_lr(ov):
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, ov))):
                return ops.cast(optimizer.learning_rate, "float32")

        # the data are arguments, not constants: compiled programs stay small and cacheable
        probe = diagnostics.probe_program(model, kernels, self.specs[0])

        self._steps = backend.jit(steps)
        self._last_step = backend.jit(last_step)
        self._evaluate_chunk = backend.jit(backend.vmap(member_evaluate, in_axes=(0, 0, 0, None, None, None)))
        self._probe = backend.jit(probe)
        self._lr = backend.jit(backend.vmap(member_lr))

    # --- train -------------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        import keras

        ops = keras.ops
        spec = self.specs[0]
        self._restore()
        for board, p in zip(self.tensorboard, self.progress):
            board.start(p.history, p.diagnostics, self.steps_per_epoch)
        if self.epoch == 0 and not self.progress[0].diagnostics:
            self._probe_all(0, "init")
        pending_early = sorted(spec.early_steps)
        while self.epoch < spec.epochs and self.active.any():
            epoch = self.epoch
            start_time = time.perf_counter()
            lr = ops.convert_to_numpy(self._lr(self.state["ov"]))
            order = ops.convert_to_tensor(np.stack([epoch_order(self.n_train, s.seed, epoch) for s in self.specs]))
            active = ops.convert_to_tensor(self.active)
            sums = np.zeros((len(self.members), 3))
            tripped = np.zeros(len(self.members), dtype=bool)
            base = epoch * self.steps_per_epoch
            cuts = [s - base for s in pending_early if base < s < base + self.full_steps] + [self.full_steps]
            done = 0
            for cut in cuts:
                if cut > done:
                    tv, ntv, ov, active, trip, seg = self._steps(
                        self.state["tv"], self.state["ntv"], self.state["ov"], self.hyper, active, order, done, cut,
                        self.x_train, self.y_train,
                    )  # fmt: skip
                    self.state.update(tv=tv, ntv=ntv, ov=ov)
                    sums += ops.convert_to_numpy(seg)
                    tripped |= ops.convert_to_numpy(trip)
                    done = cut
                for hook in self.hooks:
                    hook.on_segment_end(self, epoch, base + done)
                if cut < self.full_steps:
                    self._probe_all(base + cut, "early", alive=ops.convert_to_numpy(active))
            if self.remainder:
                tv, ntv, ov, active, trip, seg = self._last_step(
                    self.state["tv"], self.state["ntv"], self.state["ov"], self.hyper, active, order,
                    self.x_train, self.y_train,
                )  # fmt: skip
                self.state.update(tv=tv, ntv=ntv, ov=ov)
                sums += ops.convert_to_numpy(seg)
                tripped |= ops.convert_to_numpy(trip)
            pending_early = [s for s in pending_early if s > base + self.steps_per_epoch]
            self._end_epoch(epoch, sums, tripped, lr, time.perf_counter() - start_time)
        return self._finish()

    def _probe_all(self, step: int, phase: str, alive=None, dead=()) -> None:
        """Probe every member still training (and record NaN rows for `dead`, which diverged)."""
        start = time.perf_counter()
        stats = diagnostics.percentiles(
            self._probe(self.state["tv"], self.state["ntv"], self.previous_kernels, self.x_probe, self.y_probe)
        )
        seconds = (time.perf_counter() - start) / max(1, len(self.members))
        for k, p in enumerate(self.progress):
            if k in dead:
                p.diagnostics.extend(diagnostics.rows(stats, k, step, step / self.steps_per_epoch, phase, self.specs[k], self.units, first=False, finite=False))
            elif self.active[k] and (alive is None or alive[k]):
                first = not p.diagnostics
                p.diagnostics.extend(diagnostics.rows(stats, k, step, step / self.steps_per_epoch, phase, self.specs[k], self.units, first=first))
                p.probe_seconds += seconds
        self.previous_kernels = [self.state["tv"][i] for i in self.kernels]

    def _end_epoch(self, epoch: int, sums: np.ndarray, tripped: np.ndarray, lr: np.ndarray, seconds: float) -> None:
        import keras

        ops = keras.ops
        val = self._evaluate(self.state["tv"], self.state["ntv"], self.hyper, *self.val)
        newly_diverged = [k for k in range(len(self.members)) if self.active[k] and tripped[k]]
        self._probe_all((epoch + 1) * self.steps_per_epoch, "epoch", dead=newly_diverged)
        improved = np.zeros(len(self.members), dtype=bool)
        eta = seconds * (self.specs[0].epochs - epoch - 1)
        for k, p in enumerate(self.progress):
            if not self.active[k]:
                continue
            loss_sum, correct, count = sums[k]
            row = {
                "epoch": epoch + 1,
                "loss": loss_sum / count if count else math.nan,
                "accuracy": correct / count if count else math.nan,
                "val_loss": float(val[k, 0]),
                "val_accuracy": float(val[k, 1]),
                "lr": float(lr[k]),
                "seconds": seconds,
            }
            p.history.append(row)
            self.tensorboard[k].epoch(row, p.diagnostics, (epoch + 1) * self.steps_per_epoch)
            losses = np.array([row["loss"], row["val_loss"]])
            if tripped[k] or not np.all(np.isfinite(losses)) or np.any(losses > EXPLODED_LOSS):
                p.diverged = p.stopped = True
                continue
            # Keras EarlyStopping on val_accuracy (mode max, min_delta 0); NaN is never better
            if row["val_accuracy"] > p.best_value:
                p.best_value, p.best_epoch, p.wait = row["val_accuracy"], epoch + 1, 0
                improved[k] = True
            else:
                p.wait += 1
                if p.wait >= self.specs[k].patience and epoch > 0:
                    p.stopped = True
        keep = ops.convert_to_tensor(improved)
        sel = lambda new, old: [ops.where(ops.reshape(keep, (-1,) + (1,) * (len(o.shape) - 1)), n, o) for n, o in zip(new, old)]  # noqa: E731
        self.state["best_tv"] = sel(self.state["tv"], self.state["best_tv"])
        self.state["best_ntv"] = sel(self.state["ntv"], self.state["best_ntv"])
        for k, p in enumerate(self.progress):
            if self.active[k]:
                r = p.history[-1]
                log.info(
                    "%s epoch %d/%d loss %.4f val_accuracy %.4f %.1fs ETA %.0fs%s",
                    self.members[k].run_dir.name if len(self.members) == 1 else _label(self.members[k]),
                    epoch + 1, self.specs[k].epochs, r["loss"], r["val_accuracy"], seconds, eta,
                    " diverged" if p.diverged else (" early stop" if p.stopped else ""),
                )  # fmt: skip
        self.active &= np.array([not p.stopped for p in self.progress])
        progress_log.info(
            "%s epoch %d/%d: best val_accuracy %.4f, %d/%d runs training, ETA %.0fs",
            self.pack_dir.name, epoch + 1, self.specs[0].epochs, max(p.best_value for p in self.progress),
            self.active.sum(), len(self.members), eta if self.active.any() else 0,
        )  # fmt: skip
        self.epoch = epoch + 1
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch + 1)
        self._backup()

    # --- resume ------------------------------------------------------------------------------------
    def _key(self) -> str:
        return json.dumps([m.spec.key() for m in self.members])

    def _backup(self) -> None:
        import keras

        arrays = {}
        for name, values in self.state.items():
            for i, v in enumerate(values):
                arrays[f"{name}_{i}"] = keras.ops.convert_to_numpy(v)
        meta = {
            "key": self._key(),
            "epoch": self.epoch,
            "active": self.active.tolist(),
            "progress": [p.__dict__ for p in self.progress],
        }
        arrays["meta"] = np.array(json.dumps(meta, default=jsonable))
        self.pack_dir.mkdir(parents=True, exist_ok=True)
        latest, partial = self.pack_dir / BACKUP, self.pack_dir / f".{BACKUP}.partial"
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        self._hook("on_backup", self.epoch, "written")
        if latest.exists():
            os.replace(latest, self.pack_dir / PREVIOUS_BACKUP)
        self._hook("on_backup", self.epoch, "rotated")
        os.replace(partial, latest)
        self._hook("on_backup", self.epoch, "committed")

    def _restore(self) -> None:
        """Continue from the newest readable backup of this very pack, if any."""
        import keras

        (self.pack_dir / f".{BACKUP}.partial").unlink(missing_ok=True)
        for path in (self.pack_dir / BACKUP, self.pack_dir / PREVIOUS_BACKUP):
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                meta = json.loads(str(arrays.pop("meta")))
            except FileNotFoundError:
                continue
            except Exception as error:  # torn or foreign file: try the previous state
                log.warning("%s: unreadable backup (%s); trying the previous one", path, error)
                continue
            if meta.get("key") != self._key():
                log.warning("%s: a backup of other settings; starting afresh", path)
                return
            state = {}
            for name, values in self.state.items():
                restored = [arrays.get(f"{name}_{i}") for i in range(len(values))]
                if any(a is None or tuple(a.shape) != tuple(v.shape) for a, v in zip(restored, values)):
                    log.warning("%s: variables do not fit this pack; starting afresh", path)
                    return
                state[name] = [keras.ops.convert_to_tensor(a) for a in restored]
            self.state = state
            self.previous_kernels = [state["tv"][i] for i in self.kernels]
            self.epoch = int(meta["epoch"])
            self.active = np.array(meta["active"], dtype=bool)
            self.progress = [Progress(**p) for p in meta["progress"]]
            log.info("resumed from %s after epoch %d", path, self.epoch)
            self.resumed_from = self.epoch
            return

    def _hook(self, method: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, method)(self, *args)

    # --- evaluate and write --------------------------------------------------------------------------
    def _finish(self) -> list[dict]:
        import keras

        ops = keras.ops
        final = self._evaluate(self.state["tv"], self.state["ntv"], self.hyper, *self.test)
        best = self._evaluate(self.state["best_tv"], self.state["best_ntv"], self.hyper, *self.test)
        records = []
        for k, member in enumerate(self.members):
            p = self.progress[k]
            use_best = not p.diverged and p.best_epoch is not None
            test = best[k] if use_best else final[k]
            which = ("best_tv", "best_ntv") if use_best else ("tv", "ntv")
            values = [ops.convert_to_numpy(v[k]) for v in self.state[which[0]]], [ops.convert_to_numpy(v[k]) for v in self.state[which[1]]]
            records.append(self._write(k, member, {"accuracy": float(test[1]), "loss": float(test[0])}, values))
        shutil.rmtree(self.pack_dir, ignore_errors=True)
        return records

    def _write(self, k: int, member: Member, test: dict, values) -> dict:
        p, spec = self.progress[k], member.spec
        history, diag = rundir.history_frame(p.history), diagnostics.frame(p.diagnostics)
        record = {
            "cell": member.cell,
            "spec": spec.as_dict(),
            "summary": summarize(history, diag, spec, p.diverged, test, self.n_train, len(self.members)),
            "probe_seconds": p.probe_seconds,
            "resumed_from_epoch": self.resumed_from,
            # the pack, as gradatlas.packs plans it again once its runs are finished
            "pack": {"name": self.pack_dir.name, "member": k, "runs": [str(m.run_dir) for m in self.members]},
            "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provenance": provenance.of_training(self.threads),
        }

        def save_model(path):
            model = self.build(spec)  # the run's own model (its regularizer and constraint attached)
            _assign(model, self.model, values)
            model.save(path)

        rundir.write(member.run_dir, history, diag, save_model, self.tensorboard[k], record,
                     lambda stage: self._hook("on_output", k, stage))  # fmt: skip
        return record


def _assign(model, template, values) -> None:
    """Give a run's own model the member's values, matched by variable path (the packed
    template may hold extra state: dropout rates, RNG seeds of members without dropout)."""
    tv, ntv = values
    by_path = {v.path: a for v, a in zip(template.trainable_variables, tv)}
    by_path |= {v.path: a for v, a in zip(template.non_trainable_variables, ntv)}
    for variable in model.variables:
        if variable.path in by_path:
            variable.assign(by_path[variable.path])


def _label(member: Member) -> str:
    return "/".join(f"{k}~{v}" for k, v in member.cell.items())


def warn_unsettled_batch_norm(specs: list[RunSpec], steps_per_epoch: int) -> None:
    """Log when batch norm's moving averages cannot settle within a run's steps: it is evaluated
    with them, so its validation and test accuracy would understate it (docs/verdicts.md)."""
    for spec in specs:
        momentum = catalog.regularization(spec.regularizer, spec.regularizer_params).batch_norm_momentum
        steps = spec.epochs * steps_per_epoch
        if momentum is not None and steps < bn_steps_needed(momentum):
            log.warning(
                "batch norm with momentum %g over at most %d steps keeps %.0f%% of its initial moving averages "
                "(it needs %d steps to keep under 5%%): evaluation understates it; lower "
                "techniques.batch_norm.momentum (0.9 needs %d) or train more steps",
                momentum, steps,
                100 * bn_moving_average_left(momentum, steps), bn_steps_needed(momentum), bn_steps_needed(0.9),
            )
            return  # once per pack: every BN member of a pack shares the momentum and the steps


def clean_run_dirs(members: list[Member]) -> None:
    """Remove what a previous, interrupted attempt left of the members' outputs."""
    rundir.clean(m.run_dir for m in members)


def train_pack(members: list[Member], source, pack_dir: Path, threads: int = 1, hooks=(), build=None) -> list[dict]:
    """Train a pack and write every member's complete run folder; returns their run.json records."""
    clean_run_dirs(members)
    return Pack(members, source, pack_dir, threads, hooks, build).run()
