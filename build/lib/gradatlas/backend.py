"""Everything backend-specific: selecting JAX as Keras' backend, threads, memory, determinism, the
device name, and the three transformations the training engine needs (compile, vectorize over the
members of a pack, differentiate). The rest of GradAtlas is plain Keras 3.

Keras reads its backend from $KERAS_BACKEND once, when `keras` is first imported. A training
process therefore calls `select(spec.backend, threads)` before anything imports keras
(scripts/train.py does); this module imports keras and jax lazily so that importing it is free of
that side effect. The engine runs on JAX only: Keras' TensorFlow optimizers refuse
`stateless_apply`, and packing needs `jax.vmap`.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

BACKENDS = ("jax",)


def select(backend: str, threads: int = 1) -> None:
    """Make `backend` the Keras backend of this process; call before keras is imported.

    Raises ValueError for a backend the engine cannot run, RuntimeError when keras is already
    loaded with another backend (Keras cannot switch backends in a running process).
    """
    if backend not in BACKENDS:
        raise ValueError(f"train.backend = {backend!r}: the training engine runs on {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        require(backend)
        return
    os.environ["KERAS_BACKEND"] = backend
    if threads == 1:
        # XLA:CPU otherwise runs one thread per visible core in every job: N jobs on N cores would
        # contend. Read when JAX starts its backend, so it is set here, before keras imports jax.
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    # on a GPU, take memory as needed instead of 75% up front, so packs can share one GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if "tensorflow" not in sys.modules:
        # Keras imports TensorFlow for optional helpers when it is installed (tf.io.gfile when
        # saving, its RNG when seeding): a training must not pay its start-up or memory, and a GPU
        # node need not have it. Blocked, Keras falls back to its plain-Python paths.
        sys.modules["tensorflow"] = None


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
    """The persistent compilation cache, and seeds for whatever is not seeded explicitly; call
    before building a model."""
    import jax

    # packs of a study compile the same programs: a persistent cache takes most of the XLA
    # compile time out of each job's fixed cost ("off" disables it)
    cache = os.environ.get("GRADATLAS_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gradatlas", "xla"))
    if cache and cache != "off":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    # initializers, dropout masks and batch orders are seeded explicitly; these cover the rest
    # (keras.utils.set_random_seed would import TensorFlow whenever it is installed)
    random.seed(seed)
    np.random.seed(seed)


def device() -> str:
    """Human-readable name of the device the training runs on."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"GPU: {dev.device_kind}"
    return f"CPU ({os.cpu_count()} cores visible)"


def jit(fn):
    """Compile `fn` (pure: arrays in, arrays out) into one program."""
    import jax

    return jax.jit(fn)


def vmap(fn, in_axes=0):
    """`fn` over a leading member axis of its arguments (those whose `in_axes` entry is 0; None:
    shared by all members) and of every result: a pack."""
    import jax

    return jax.vmap(fn, in_axes=in_axes)


def value_and_grad(fn):
    """(value, aux), grads of `fn(params) -> (value, aux)` with respect to `params`."""
    import jax

    return jax.value_and_grad(fn, has_aux=True)
