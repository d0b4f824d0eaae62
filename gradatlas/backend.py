"""Everything backend-specific, kept in one small module: backend selection, thread pools,
determinism, the device name, the training input pipeline, and the gradients of the diagnostics
probe. The rest of GradAtlas is plain Keras 3.

Keras reads its backend from $KERAS_BACKEND once, when `keras` is first imported. A training
process therefore calls `select(spec["backend"])` before anything imports keras (scripts/train.py
does); this module imports keras lazily so that importing it is free of that side effect.
"""

from __future__ import annotations

import os
import sys

import numpy as np

BACKENDS = ("tensorflow", "jax")


def select(backend: str) -> None:
    """Make `backend` the Keras backend of this process; call before keras is imported.

    Raises RuntimeError when keras is already loaded with another backend: Keras cannot switch
    backends safely in a running process.
    """
    if backend not in BACKENDS:
        raise ValueError(f"train.backend = {backend!r}: must be one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        require(backend)
        return
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        # TensorFlow still gets imported (TensorBoard summaries); keep it off any GPU JAX uses
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require(backend: str) -> None:
    """Fail clearly when this process runs another Keras backend than the training asks for."""
    if name() != backend:
        raise RuntimeError(
            f"train.backend = {backend!r}, but keras was already imported with the {name()!r} backend; "
            f"call gradatlas.backend.select({backend!r}) before importing keras (or set KERAS_BACKEND={backend})"
        )


def name() -> str:
    import keras

    return keras.backend.backend()


def configure(threads: int, deterministic: bool, seed: int) -> None:
    """Size thread pools to the job's `threads` and seed every RNG; call before building a model."""
    import keras

    if name() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:  # already initialized in this process (tests): keep its pools
            pass
        for gpu in tf.config.list_physical_devices("GPU"):
            # several trainings may share one GPU
            tf.config.experimental.set_memory_growth(gpu, True)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    elif name() == "jax":
        import jax

        # compiled train steps and probes are shared by the jobs of a study: a persistent
        # compilation cache takes most of the XLA compile time out of each job's fixed cost
        cache = os.environ.get("GRADATLAS_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gradatlas", "xla"))
        if cache and cache != "off":
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
        # XLA:CPU's Eigen pool is sized from the visible CPUs when the backend starts: pin this
        # process to `threads` of them (Linux), which also keeps parallel jobs off each other's cores.
        if hasattr(os, "sched_setaffinity") and threads < len(os.sched_getaffinity(0)):
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    keras.utils.set_random_seed(seed)


def device() -> str:
    """Human-readable name of the device the training runs on."""
    if name() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return f"GPU: {details.get('device_name', gpus[0].name)}"
    if name() == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return f"GPU: {dev.device_kind}"
    return f"CPU ({os.cpu_count()} cores visible)"


def fit_options() -> dict:
    """`model.compile` options of the fastest correct configuration of this backend."""
    # XLA: ~1.3x on CPU for these MLPs under TensorFlow (Keras' "auto" leaves it off on CPU);
    # the JAX backend always compiles its train step.
    return {"jit_compile": True}


# --- input pipeline ------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of epoch `epoch`: a function of (seed, epoch) only, the same in every backend."""
    return np.random.default_rng([seed, epoch, 0x6A7A]).permutation(n).astype(np.int32)


class EpochData:
    """Training batches in memory, one epoch per pass, reshuffled per (seed, epoch).

    `set_epoch(e)` (from a callback's on_epoch_begin, which runs before the epoch's first batch
    is drawn) selects the order, so a resumed training sees exactly the batches an uninterrupted
    one would have seen. `dataset()` is what `model.fit` gets: a tf.data pipeline under
    TensorFlow (in-graph gather, no per-epoch host copies), a `keras.utils.PyDataset` under JAX
    (one host gather per batch from the in-memory arrays).
    """

    def __init__(self, x, y, batch_size: int, seed: int):
        self.x, self.y = x, y
        self.n, self.batch_size, self.seed = len(x), batch_size, seed
        self.steps = -(-self.n // batch_size)
        self.epoch = 0
        self._tf_epoch = None
        self._order = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._order = None
        if self._tf_epoch is not None:
            self._tf_epoch.assign(self.epoch)

    def order(self) -> np.ndarray:
        if self._order is None:
            self._order = epoch_order(self.n, self.seed, self.epoch)
        return self._order

    def callback(self):
        """The callback that selects each epoch's order before its first batch is drawn."""
        import keras

        data = self

        class SelectEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                data.set_epoch(epoch)

        return SelectEpoch()

    def dataset(self):
        return self._tf_dataset() if name() == "tensorflow" else _JaxEpoch(self)

    def _tf_dataset(self):
        import tensorflow as tf

        x, y = tf.constant(self.x), tf.constant(self.y)
        self._tf_epoch = tf.Variable(self.epoch, dtype=tf.int64, trainable=False)
        n, seed, epoch_var = self.n, self.seed, self._tf_epoch

        def one_epoch(_):
            order = tf.numpy_function(lambda e: epoch_order(n, seed, int(e)), [epoch_var.value()], tf.int32)
            return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, [n]))

        ds = tf.data.Dataset.range(1).flat_map(one_epoch).batch(self.batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps))
        ds = ds.map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=1, deterministic=True)
        return ds.prefetch(2)


def _jax_epoch_class():
    import keras

    class JaxEpoch(keras.utils.PyDataset):
        def __init__(self, data: EpochData):
            super().__init__()
            self.data = data

        def __len__(self):
            return self.data.steps

        def __getitem__(self, i):
            # a host gather of one batch (numpy, ~0.1 ms) is cheaper than dispatching device ops
            # per batch; Keras' JAX trainer puts it on the device
            b = self.data.batch_size
            idx = self.data.order()[i * b : (i + 1) * b]
            return np.take(self.data.x, idx, axis=0), np.take(self.data.y, idx, axis=0)

    return JaxEpoch


def _JaxEpoch(data: EpochData):
    global _JAX_EPOCH
    if _JAX_EPOCH is None:
        _JAX_EPOCH = _jax_epoch_class()
    return _JAX_EPOCH(data)


_JAX_EPOCH = None


# --- the diagnostics probe -----------------------------------------------------------------------
def sync(model) -> None:
    """Write the state a running JAX `fit` keeps outside the model back into its variables."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _loss(y, logits):
    import keras

    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def _slopes(records, derivative):
    return [derivative(r["u"]) for r in records[:-1]]


def probe_gradients(model, x: np.ndarray, y: np.ndarray):
    """(records, dz, dW) of `probe` (see there): the probe's gradients, per Dense layer."""
    return probe(model, x, y)[:3]


def probe(model, x: np.ndarray, y: np.ndarray, derivative=None):
    """One inference-mode pass over the probe batch, compiled once per (model, probe batch).

    Returns (records, dz, dW, kernels, slopes): per Dense layer the recorded arrays of
    `model.probe_forward`, dL/dz (batch x units), dL/dW and the kernel W, and per hidden layer
    `derivative(u)` (None when no derivative is given), all numpy, where L is the mean
    cross-entropy over the batch (data loss only: regularization penalties are left out so that
    techniques compare on the same quantity).
    """
    import keras

    from gradatlas.model import dense_layers

    sync(model)
    cache = model.__dict__.setdefault("_gradatlas_probe", {})
    key = (id(x), id(y), derivative)
    if key not in cache:
        cache.clear()
        cache[key] = _compile_probe(model, dense_layers(model), x, y, derivative)
    out = cache[key]()
    to_np = keras.ops.convert_to_numpy
    records, dz, dW, kernels, slopes = out
    records = [{k: to_np(v) for k, v in r.items()} for r in records]
    slopes = [to_np(s) for s in slopes] if derivative is not None else None
    return records, [to_np(g) for g in dz], [to_np(g) for g in dW], [to_np(k) for k in kernels], slopes


def _compile_probe(model, dense, x, y, derivative):
    from gradatlas.model import probe_forward

    zeros = [np.zeros((len(x), layer.units), dtype="float32") for layer in dense]
    if name() == "tensorflow":
        import tensorflow as tf

        tx, ty, eps = tf.constant(x), tf.constant(y), [tf.constant(z) for z in zeros]

        @tf.function(autograph=False)
        def run():
            kernels = [layer.kernel.value for layer in dense]
            with tf.GradientTape() as tape:
                tape.watch(eps)
                logits, records = probe_forward(model, tx, eps)
                loss = _loss(ty, logits)
            grads = tape.gradient(loss, kernels + eps)
            slopes = _slopes(records, derivative) if derivative is not None else []
            return records, grads[len(dense) :], grads[: len(dense)], kernels, slopes

        return run
    if name() == "jax":
        import jax
        import keras

        variables = model.variables
        kernel_index = [next(i for i, v in enumerate(variables) if v is layer.kernel) for layer in dense]
        jx, jy = jax.numpy.asarray(x), jax.numpy.asarray(y)

        def loss_fn(values, eps):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                logits, records = probe_forward(model, jx, eps)
            return _loss(jy, logits), records

        @jax.jit
        def run_values(values):
            (_, records), (dvalues, dz) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(values, zeros)
            slopes = _slopes(records, derivative) if derivative is not None else []
            return records, dz, [dvalues[i] for i in kernel_index], [values[i] for i in kernel_index], slopes

        return lambda: run_values([v.value for v in variables])
    raise NotImplementedError(f"no gradient probe for the {name()} backend")
