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

Resume: at every epoch end the pack's `state.State` (all variables, best weights, journals, the
hooks' state) is written atomically to `<pack_dir>/state.npz` (the previous one kept); a killed
pack rerun resumes there and, on CPU with the same programs, ends bit-identical to an
uninterrupted one.

Parts: `gradatlas.steps` (the per-member step, evaluation and probe, compiled), `gradatlas.state`
(the state and its checkpoint), `gradatlas.rundir` (the run folder); here the members, the data
and `Trainer.run`: epochs of segments of steps between probes, validation, early stopping, checkpoint,
then evaluation and the run folders.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from keras import ops

from gradatlas import backend, catalog, data, diagnostics, provenance, rundir, steps
from gradatlas.grid import Run
from gradatlas.model import build as build_model, dense_layers
from gradatlas.outcomes import bn_moving_average_left, bn_steps_needed
from gradatlas.rundir import summarize
from gradatlas.spec import RunSpec
from gradatlas.state import State, Train, Weights, load as load_state, save as save_state
from gradatlas.steps import EXPLODED_LOSS, member_scalars
from gradatlas.tensorboard import RunLog

log = logging.getLogger("gradatlas.engine")
# one line per pack epoch, short enough for the console (scripts/train.py shows it on the job's stderr)
progress_log = logging.getLogger("gradatlas.engine.progress")


@dataclass(frozen=True)
class View:
    """What a hook sees of the training, read-only: the epochs and steps done, the pack's `State`
    (its values: `state.train.trainable`, ...), the template network whose stateless calls every
    member runs, and the steps per epoch."""

    epoch: int
    step: int
    state: State
    model: object
    steps_per_epoch: int


class Hooks:
    """Extra behaviour injected by callers (study presets, benchmarks, tests); no-ops here. Each
    method gets a `View` first. A hook whose state must survive a resume names it by `key`: the
    engine keeps `state()` in the checkpoint (`State.hooks`) and hands it back to `restore`."""

    key: str | None = None

    def state(self): ...

    def restore(self, value) -> None: ...

    def on_start(self, view: View) -> None: ...

    def on_segment_end(self, view: View, epoch: int, step: int) -> None: ...

    def on_epoch_end(self, view: View, epoch: int) -> None: ...

    def on_backup(self, view: View, epoch: int, stage: str) -> None: ...

    def on_output(self, view: View, member: int, stage: str) -> None: ...


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of epoch `epoch` (0-based): a function of (seed, epoch) only, so a member
    sees the same batches alone, in any pack, and after a resume."""
    return np.random.default_rng([seed, epoch, 0x6A7A]).permutation(n).astype(np.int32)


class Trainer:
    """A pack: K members trained as one program. `run()` trains them and writes their run folders."""

    def __init__(self, members: list[Run], source, pack_dir: Path, threads: int = 1, hooks=(), build=None):
        """`source`: the prepared-data folder, or a `data.Split` (study presets that train on other
        inputs); `build(spec, packed=True, dropout=...)`: the members' network (default `model.build`)."""
        self.build = build = build or build_model
        self.members, self.pack_dir, self.hooks, self.threads = list(members), Path(pack_dir), list(hooks), threads
        self.specs = [m.spec for m in self.members]
        first = self.specs[0]
        backend.require(first.backend)
        if len(self.members) > 1 and not backend.packs(first.backend):
            raise ValueError(f"train.backend = {first.backend!r} trains one run per pack, not {len(self.members)}")
        backend.configure(first.seed)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")

        # data shared by the pack
        split = (
            source
            if isinstance(source, data.Split)
            else data.split(data.open_prepared(source), first.validation_size, first.train_subset)
        )
        self.split = split
        self.n_train, self.batch_size = len(split.x_train), first.batch_size
        self.full_steps, self.remainder = divmod(self.n_train, self.batch_size)
        self.steps_per_epoch = self.full_steps + (1 if self.remainder else 0)
        warn_unsettled_batch_norm(self.specs, self.steps_per_epoch)
        self.x_train, self.y_train = ops.convert_to_tensor(split.x_train), ops.convert_to_tensor(split.y_train)
        self.val, self.test = steps.chunks(split.x_val, split.y_val), steps.chunks(split.x_test, split.y_test)
        self.x_probe = ops.convert_to_tensor(split.x_train[: first.probe_size])
        self.y_probe = ops.convert_to_tensor(split.y_train[: first.probe_size])

        # one Keras model per member (its own seeded initial weights), stacked; the first is the template
        has_dropout = any(
            catalog.regularization(s.regularizer, s.regularizer_params).dropout_rate > 0 for s in self.specs
        )
        models = [build(s, packed=True, dropout=has_dropout) for s in self.specs]
        self.model = models[0]
        self.units = [layer.units for layer in dense_layers(self.model)]
        optimizer = catalog.optimizer(
            first.optimizer,
            first.optimizer_params,
            catalog.lr_schedule(
                first.lr_schedule, first.lr_schedule_params, first.learning_rate, self.steps_per_epoch, first.epochs
            ),
        )
        optimizer.build(self.model.trainable_variables)  # clipping is the engine's, per member (steps.clip)
        scalars = [member_scalars(s) for s in self.specs]
        self.scalars = {k: np.array([s[k] for s in scalars], dtype="float32") for k in scalars[0]}
        self.hyper = {k: ops.convert_to_tensor(v) for k, v in self.scalars.items()}
        self.graph = steps.Graph.of(self.model, optimizer, self.scalars, self.batch_size, self.full_steps)
        self.programs = steps.compile(self.graph, first)
        self.state = State.initial(self._stack(models, optimizer))
        # the kernels at the last probe, for the update ratio (after a resume: the restored ones, as
        # every checkpoint follows an epoch-end probe)
        self.probed = [self.state.train.trainable[i] for i in self.graph.kernels]
        self.resumed_from = 0
        self.tensorboard = [RunLog(self.pack_dir / f"tensorboard-{i}") for i in range(len(self.members))]

    def _stack(self, models, optimizer) -> Train:
        """The members' initial values, stacked; each member's own learning rate in the optimizer's."""
        lr = getattr(optimizer, "_learning_rate", None)
        lr_index = next((i for i, v in enumerate(optimizer.variables) if v is lr), None)
        initial = [np.asarray(ops.convert_to_numpy(v)) for v in optimizer.variables]

        def stack(arrays):
            return ops.convert_to_tensor(np.stack(arrays))

        def variables(group):
            return [
                stack([ops.convert_to_numpy(getattr(m, group)[i]) for m in models])
                for i in range(len(getattr(self.model, group)))
            ]

        return Train(
            variables("trainable_variables"),
            variables("non_trainable_variables"),
            [
                stack([np.asarray(s.learning_rate, dtype=v.dtype) if i == lr_index else v for s in self.specs])
                for i, v in enumerate(initial)
            ],
        )

    # --- train -------------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train (from the pack's checkpoint, if any), then evaluate and write the run folders."""
        self._resume()
        spec, per_epoch = self.specs[0], self.steps_per_epoch
        if self.state.epoch == 0 and not self.state.progress[0].diagnostics:
            self._probe(0, "init")
        self._hook("on_start")
        early = sorted(spec.early_steps)  # steps after which the members are probed
        while self.state.epoch < spec.epochs and self.state.active.any():
            epoch, base, started = self.state.epoch, self.state.epoch * per_epoch, time.perf_counter()
            lr = ops.convert_to_numpy(self.programs.lr(self.state.train.optimizer))
            order = ops.convert_to_tensor(np.stack([epoch_order(self.n_train, s.seed, epoch) for s in self.specs]))
            active = ops.convert_to_tensor(self.state.active)
            sums, tripped = np.zeros((len(self.members), 3)), np.zeros(len(self.members), dtype=bool)
            done = 0
            for cut in [s - base for s in early if base < s < base + self.full_steps] + [self.full_steps]:
                if cut > done:  # full batches done..cut-1, one compiled loop
                    active = self._steps(self.programs.steps, active, order, sums, tripped, done, cut)
                    done = cut
                self._hook("on_segment_end", epoch, base + done, step=base + done)
                if cut < self.full_steps:
                    self._probe(base + cut, "early", alive=ops.convert_to_numpy(active))
            if self.remainder:  # the last, partial batch
                self._steps(self.programs.last_step, active, order, sums, tripped)
            early = [s for s in early if s > base + per_epoch]
            self._end_epoch(epoch, sums, tripped, lr, time.perf_counter() - started)
            self._hook("on_epoch_end", epoch + 1)
            self._save()
        return self._finish()

    def _steps(self, program, active, order, sums, tripped, *bounds):
        """Run `program` (steps.Programs' steps or last_step) on the pack's state; adds its sums and
        tripped members to the epoch's; returns the members still active."""
        train, active, trip, seg = program(
            self.state.train, self.hyper, active, order, *bounds, self.x_train, self.y_train
        )
        self.state = self.state._replace(train=train)
        sums += ops.convert_to_numpy(seg)
        tripped |= ops.convert_to_numpy(trip)
        return active

    def _probe(self, step: int, phase: str, alive=None, dead=()) -> None:
        """Probe every member still training (and record NaN rows for `dead`, which diverged)."""
        start = time.perf_counter()
        trainable = self.state.train.trainable
        out = self.programs.probe(trainable, self.state.train.non_trainable, self.probed, self.x_probe, self.y_probe)
        stats = diagnostics.percentiles(out)
        seconds = (time.perf_counter() - start) / max(1, len(self.members))
        for k, p in enumerate(self.state.progress):
            if k in dead:
                p.diagnostics.extend(
                    diagnostics.rows(
                        stats,
                        k,
                        step,
                        step / self.steps_per_epoch,
                        phase,
                        self.specs[k],
                        self.units,
                        first=False,
                        finite=False,
                    )
                )
            elif self.state.active[k] and (alive is None or alive[k]):
                first = not p.diagnostics
                p.diagnostics.extend(
                    diagnostics.rows(
                        stats, k, step, step / self.steps_per_epoch, phase, self.specs[k], self.units, first=first
                    )
                )
                p.probe_seconds += seconds
        self.probed = [trainable[i] for i in self.graph.kernels]

    def _end_epoch(self, epoch: int, sums: np.ndarray, tripped: np.ndarray, lr: np.ndarray, seconds: float) -> None:
        """Validation, the epoch-end probe, each member's history row, divergence and early stopping
        (Keras EarlyStopping on val_accuracy, mode max, min_delta 0; NaN is never better), best weights."""
        state, step = self.state, (epoch + 1) * self.steps_per_epoch
        val = steps.evaluate(self.programs, state.train[:2], self.hyper, self.val)
        self._probe(step, "epoch", dead=[k for k in range(len(self.members)) if state.active[k] and tripped[k]])
        improved = np.zeros(len(self.members), dtype=bool)
        eta = seconds * (self.specs[0].epochs - epoch - 1)
        for k, p in enumerate(state.progress):
            if not state.active[k]:
                continue
            loss_sum, correct, count = sums[k]
            row = {
                "epoch": epoch + 1,
                "loss": loss_sum / count if count else float("nan"),
                "accuracy": correct / count if count else float("nan"),
                "val_loss": float(val[k, 0]),
                "val_accuracy": float(val[k, 1]),
                "lr": float(lr[k]),
                "seconds": seconds,
            }
            p.history.append(row)
            self.tensorboard[k].epoch(row, p.diagnostics, step)
            losses = np.array([row["loss"], row["val_loss"]])
            if tripped[k] or not np.all(np.isfinite(losses)) or np.any(losses > EXPLODED_LOSS):
                p.diverged = p.stopped = True
            elif row["val_accuracy"] > p.best_value:
                p.best_value, p.best_epoch, p.wait = row["val_accuracy"], epoch + 1, 0
                improved[k] = True
            else:
                p.wait += 1
                p.stopped = p.wait >= self.specs[k].patience and epoch > 0
            log.info(
                "%s epoch %d/%d loss %.4f val_accuracy %.4f %.1fs ETA %.0fs%s",
                Path(self.members[k].run_dir).name if len(self.members) == 1 else _label(self.members[k]),
                epoch + 1,
                self.specs[k].epochs,
                row["loss"],
                row["val_accuracy"],
                seconds,
                eta,
                " diverged" if p.diverged else (" early stop" if p.stopped else ""),
            )
        keep = ops.convert_to_tensor(improved)
        best = Weights(
            steps.select(keep, state.train.trainable, state.best.trainable),
            steps.select(keep, state.train.non_trainable, state.best.non_trainable),
        )
        active = state.active & np.array([not p.stopped for p in state.progress])
        self.state = state._replace(best=best, epoch=epoch + 1, active=active)
        progress_log.info(
            "%s epoch %d/%d: best val_accuracy %.4f, %d/%d runs training, ETA %.0fs",
            self.pack_dir.name,
            epoch + 1,
            self.specs[0].epochs,
            max(p.best_value for p in state.progress),
            active.sum(),
            len(self.members),
            eta if active.any() else 0,
        )

    # --- checkpoint --------------------------------------------------------------------------------
    def _key(self) -> str:
        return json.dumps([m.spec.key() for m in self.members])

    def _save(self) -> None:
        self.state = self.state._replace(hooks={h.key: h.state() for h in self.hooks if getattr(h, "key", None)})
        save_state(
            self.state, self.pack_dir, self._key(), lambda stage: self._hook("on_backup", self.state.epoch, stage)
        )

    def _resume(self) -> None:
        """Continue from the newest readable checkpoint of this very pack, if any: its state, the
        hooks' own, and the TensorBoard logs rewritten from the restored journals."""
        restored = load_state(self.pack_dir, self.state, self._key())
        if restored is not None:
            self.state, self.resumed_from = restored, restored.epoch
            self.probed = [restored.train.trainable[i] for i in self.graph.kernels]
        for hook in self.hooks:
            if getattr(hook, "key", None) in self.state.hooks:
                hook.restore(self.state.hooks[hook.key])
        for board, p in zip(self.tensorboard, self.state.progress):
            board.start(p.history, p.diagnostics, self.steps_per_epoch)

    def _hook(self, method: str, *args, step: int | None = None) -> None:
        if self.hooks:
            epoch = self.state.epoch
            view = View(
                epoch,
                epoch * self.steps_per_epoch if step is None else step,
                self.state,
                self.model,
                self.steps_per_epoch,
            )
            for hook in self.hooks:
                getattr(hook, method)(view, *args)

    # --- evaluate and write --------------------------------------------------------------------------
    def _finish(self) -> list[dict]:
        train, best = self.state.train, self.state.best
        final = steps.evaluate(self.programs, train[:2], self.hyper, self.test)
        at_best = steps.evaluate(self.programs, best, self.hyper, self.test)
        records = []
        for k, member in enumerate(self.members):
            p = self.state.progress[k]
            use_best = not p.diverged and p.best_epoch is not None
            test = at_best[k] if use_best else final[k]
            values = [[ops.convert_to_numpy(v[k]) for v in group] for group in (best if use_best else train[:2])]
            records.append(self._write(k, member, {"accuracy": float(test[1]), "loss": float(test[0])}, values))
        shutil.rmtree(self.pack_dir, ignore_errors=True)
        return records

    def _write(self, k: int, member: Run, test: dict, values) -> dict:
        p, spec = self.state.progress[k], member.spec
        history, diag = rundir.history_frame(p.history), diagnostics.frame(p.diagnostics)
        record = {
            "cell": member.cell,
            "spec": spec.as_dict(),
            "summary": summarize(history, diag, spec, p.diverged, test, self.n_train, len(self.members)),
            "probe_seconds": p.probe_seconds,
            "resumed_from_epoch": self.resumed_from,
            # the pack, as gradatlas.packs plans it again once its runs are finished
            "pack": {"name": self.pack_dir.name, "member": k, "runs": [m.run_dir for m in self.members]},
            "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provenance": provenance.of_training(self.threads),
        }

        def save_model(path):
            model = self.build(spec)  # the run's own model (its regularizer and constraint attached)
            _assign(model, self.model, values)
            model.save(path)

        rundir.write(
            member.run_dir,
            history,
            diag,
            save_model,
            self.tensorboard[k],
            record,
            lambda stage: self._hook("on_output", k, stage),
        )
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


def _label(member: Run) -> str:
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
                momentum,
                steps,
                100 * bn_moving_average_left(momentum, steps),
                bn_steps_needed(momentum),
                bn_steps_needed(0.9),
            )
            return  # once per pack: every BN member of a pack shares the momentum and the steps


def clean_run_dirs(members: list[Run]) -> None:
    """Remove what a previous, interrupted attempt left of the members' outputs."""
    rundir.clean(m.run_dir for m in members)


def train_pack(members: list[Run], source, pack_dir: Path, threads: int = 1, hooks=(), build=None) -> list[dict]:
    """Train a pack and write every member's complete run folder; returns their run.json records."""
    clean_run_dirs(members)
    return Trainer(members, source, pack_dir, threads, hooks, build).run()
