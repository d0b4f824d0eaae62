"""Everything backend-specific: backend selection, thread pools, determinism, the device name,
and the three transformations the training engine needs from the backend (compile, vectorize over
the members of a pack, differentiate). The rest of GradAtlas is plain Keras 3.

Keras reads its backend from $KERAS_BACKEND once, when `keras` is first imported. A training
process therefore calls `select(spec.backend)` before anything imports keras (scripts/train.py
does); this module imports keras lazily so that importing it is free of that side effect.
Packing (K > 1 members per program) needs JAX's `vmap`; TensorFlow trains packs of one.
"""

from __future__ import annotations

import os
import sys


BACKENDS = ("tensorflow", "jax")


def select(backend: str, threads: int = 1) -> None:
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
    if backend == "jax" and threads == 1:
        # XLA:CPU otherwise runs one thread per visible core in every job: N jobs on N cores would
        # contend. Read when JAX starts its backend, so it is set here, before keras imports jax.
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    # TensorFlow's C++ start-up chatter (oneDNN notices, NodeDef warnings) is noise in job logs
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


def jit(fn):
    """Compile `fn` (pure: arrays in, arrays out) into one program."""
    if name() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, autograph=False, reduce_retracing=True)


def vmap(fn, in_axes=0):
    """`fn` over a leading member axis of its arguments (those whose `in_axes` entry is 0; None:
    shared by all members) and of every result: a pack.

    TensorFlow has no vectorizing transformation that handles Keras' stateless calls, so there a
    pack has one member and this only removes and adds the member axis.
    """
    if name() == "jax":
        import jax

        return jax.vmap(fn, in_axes=in_axes)
    import keras

    def one(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else [in_axes] * len(args)
        args = [keras.tree.map_structure(lambda t: t[0], a) if axis == 0 else a for a, axis in zip(args, axes)]
        return keras.tree.map_structure(lambda t: keras.ops.expand_dims(t, 0), fn(*args))

    return one


def value_and_grad(fn):
    """(value, aux), grads of `fn(params, *rest) -> (value, aux)` with respect to `params` (a list)."""
    if name() == "jax":
        import jax

        return jax.value_and_grad(fn, has_aux=True)
    import tensorflow as tf

    def run(params, *rest):
        with tf.GradientTape() as tape:
            tape.watch(params)
            value, aux = fn(params, *rest)
        return (value, aux), tape.gradient(value, params, unconnected_gradients="zero")

    return run
