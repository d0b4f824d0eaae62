"""Everything backend-specific: selecting Keras' backend, threads, memory, determinism, the device
name, and the four things the training engine needs from the backend (compile, vectorize over the
members of a pack, differentiate, apply an optimizer step to values). The rest of GradAtlas is plain
Keras 3.

Keras reads its backend from $KERAS_BACKEND once, when `keras` is first imported. A training
process therefore calls `select(spec.backend, threads)` before anything imports keras
(scripts/train.py does); this module imports keras, jax and tensorflow lazily so that importing it
is free of that side effect (`select` imports keras).

JAX packs: `jax.vmap` trains K members as one program. TensorFlow trains packs of one (it has no
vectorizing transformation for Keras' stateless calls, and its optimizers refuse
`stateless_apply`), through the same engine and the same programs.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

BACKENDS = ("jax", "tensorflow")


def packs(backend: str) -> bool:
    """Whether `backend` trains more than one member per program."""
    return backend == "jax"


def select(backend: str, threads: int | None = None) -> None:
    """Make `backend` the Keras backend of this process and import Keras; call before anything
    else imports keras. `threads`: the job's CPU cores (`pin`); None leaves the process as it is
    (tests, notebooks).

    Raises ValueError for an unknown backend, RuntimeError when keras is already loaded with
    another backend (Keras cannot switch backends in a running process).
    """
    if backend not in BACKENDS:
        raise ValueError(f"train.backend = {backend!r}: must be one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        require(backend)
        return
    os.environ["KERAS_BACKEND"] = backend
    if threads is not None:
        pin(threads)
    if backend == "tensorflow":
        if threads is not None:  # read when TensorFlow starts its runtime: size its pools to the job's cores
            os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
            os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(min(2, threads)))
        # its C++ start-up chatter (oneDNN notices) is noise in job logs
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _import_keras()
        return
    # on a GPU, take memory as needed instead of 75% up front, so packs can share one GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if "tensorflow" not in sys.modules:
        # Keras imports TensorFlow for optional helpers when it is installed (tf.io.gfile when
        # saving, its RNG when seeding): a JAX training must not pay its start-up or memory, and a
        # GPU node need not have it. Blocked, Keras falls back to its plain-Python paths.
        sys.modules["tensorflow"] = None
    _import_keras()


_held_cpus: list[int] = []  # the lock files' descriptors: held until the process ends


def pin(threads: int) -> list[int] | None:
    """Keep this process on `threads` of the CPUs it may use that no other GradAtlas job on this
    machine holds -> those CPUs, or None when nothing was pinned.

    XLA:CPU sizes its thread pool to the process' CPU affinity and ignores its thread flags, so a
    1-thread job would run a thread per core: N such jobs on N cores contend (two 12-run packs on
    2 cores: 12% fewer samples/s each than pinned apart). A CPU is held by an flock on
    `<tmp>/gradatlas-cpus-<uid>/<cpu>`, which the system releases when the process ends, killed
    or not. Nothing is pinned when the process may use no more than `threads` CPUs already (a
    SLURM allocation) or fewer than `threads` are free (more jobs than cores: all share them)."""
    import fcntl
    import tempfile

    if not hasattr(os, "sched_setaffinity"):  # macOS has no CPU affinity to set
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if threads >= len(allowed):
        return None
    folder = os.path.join(tempfile.gettempdir(), f"gradatlas-cpus-{os.getuid()}")
    taken: list[tuple[int, int]] = []
    try:
        os.makedirs(folder, exist_ok=True)
        for cpu in allowed:
            fd = os.open(os.path.join(folder, str(cpu)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            taken.append((cpu, fd))
            if len(taken) == threads:
                break
    except OSError:  # an unwritable temporary folder: run unpinned
        pass
    if len(taken) < threads:
        for _, fd in taken:
            os.close(fd)
        return None
    cpus = [cpu for cpu, _ in taken]
    os.sched_setaffinity(0, cpus)
    _held_cpus.extend(fd for _, fd in taken)
    return cpus


def _import_keras() -> None:
    """Import Keras (fixing the backend) without matplotlib: Keras imports it for its image-gallery
    helpers when it is installed, 0.3 s of every job's start for plots a training never draws.
    Blocked only while Keras loads; a later `import matplotlib` works as usual."""
    block = "matplotlib" not in sys.modules
    if block:
        sys.modules["matplotlib"] = None
    try:
        import keras  # noqa: F401
    finally:
        if block:
            del sys.modules["matplotlib"]


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


def configure(seed: int) -> None:
    """Compilation cache (JAX) or determinism (TensorFlow), and seeds for whatever is not seeded
    explicitly; call before building a model."""
    if name() == "jax":
        import jax

        # packs of a study compile the same programs: a persistent cache takes most of the XLA
        # compile time out of each job's fixed cost ("off" disables it). Every program is kept, the
        # small ones too: Keras runs its initializers op by op, dozens of programs of a few ms that
        # every job compiled again (cold demo 74 -> 65 s; a job's start 0.5 s shorter)
        cache = os.environ.get(
            "GRADATLAS_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gradatlas", "xla")
        )
        if cache and cache != "off":
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    else:
        import tensorflow as tf

        # the same programs give the same bits: what makes a resumed run equal an uninterrupted one
        tf.config.experimental.enable_op_determinism()
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)  # several trainings may share one GPU
    # initializers, dropout masks and batch orders are seeded explicitly; these cover the rest
    # (keras.utils.set_random_seed would import TensorFlow whenever it is installed)
    random.seed(seed)
    np.random.seed(seed)


def device() -> str:
    """Human-readable name of the device the training runs on."""
    if name() == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return f"GPU: {dev.device_kind}"
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"GPU: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)}"
    return f"CPU ({os.cpu_count()} cores visible)"


def jit(fn):
    """Compile `fn` (pure: arrays in, arrays out) into one program."""
    if name() == "jax":
        import jax

        return jax.jit(fn)
    import keras
    import tensorflow as tf

    compiled = tf.function(fn, autograph=False, reduce_retracing=True)

    def call(*args):
        # Python numbers would be baked into the graph (one trace per value): pass them as tensors
        return compiled(*keras.tree.map_structure(lambda a: tf.constant(a) if isinstance(a, (int, float)) else a, args))

    return call


def vmap(fn, in_axes=0):
    """`fn` over a leading member axis of its arguments (those whose `in_axes` entry is 0; None:
    shared by all members) and of every result: a pack.

    On TensorFlow a pack has one member, and this removes and adds the member axis."""
    if name() == "jax":
        import jax

        return jax.vmap(fn, in_axes=in_axes)
    import keras

    def only(t):
        if t.shape[0] != 1:
            raise ValueError(f"the {name()} backend trains packs of one member, not {t.shape[0]}")
        return t[0]

    def one(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else [in_axes] * len(args)
        args = [keras.tree.map_structure(only, a) if axis == 0 else a for a, axis in zip(args, axes)]
        return keras.tree.map_structure(lambda t: keras.ops.expand_dims(t, 0), fn(*args))

    return one


def value_and_grad(fn):
    """(value, aux), grads of `fn(params) -> (value, aux)` with respect to `params` (a list)."""
    if name() == "jax":
        import jax

        return jax.value_and_grad(fn, has_aux=True)
    import tensorflow as tf

    def run(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            value, aux = fn(params)
        return (value, aux), tape.gradient(value, params, unconnected_gradients="zero")

    return run


def optimizer_step(optimizer, variables):
    """f(optimizer_values, grads, values) -> (new values, new optimizer values): one step of the Keras
    `optimizer` (built on `variables`) on values, for use inside a compiled program.

    JAX: `optimizer.stateless_apply`. TensorFlow's optimizers refuse it (tf.distribute needs real
    variables), so there the values are assigned to the variables, Keras applies the step to them,
    and the results are read back: the same pure function, for the one member of a pack."""
    if name() == "jax":
        return optimizer.stateless_apply
    import keras

    def step(optimizer_values, grads, values):
        for var, value in zip(list(optimizer.variables) + list(variables), list(optimizer_values) + list(values)):
            var.assign(value)
        optimizer.apply(grads, variables)
        read = lambda vs: [keras.ops.convert_to_tensor(v) for v in vs]  # noqa: E731
        return read(variables), read(optimizer.variables)

    return step
