"""Everything backend-specific, kept in one small module: thread pools, determinism, the device
name, and the gradients of the diagnostics probe. The rest of GradAtlas is plain Keras 3.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from gradatlas.model import dense_layers, probe_forward


def name() -> str:
    return keras.backend.backend()


def configure(threads: int, deterministic: bool, seed: int) -> None:
    """Size thread pools to the job's `threads` and seed every RNG; call before building a model."""
    if name() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        for gpu in tf.config.list_physical_devices("GPU"):
            # several trainings may share one GPU
            tf.config.experimental.set_memory_growth(gpu, True)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
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


def _loss(y, logits):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def probe_gradients(model: keras.Sequential, x: np.ndarray, y: np.ndarray):
    """One inference-mode pass over the probe batch.

    Returns (records, dz, dW): per Dense layer the recorded arrays of `model.probe_forward`,
    dL/dz (batch x units) and dL/dW, all numpy, where L is the mean cross-entropy over the batch
    (data loss only: regularization penalties are left out so that techniques compare on the
    same quantity).
    """
    dense = dense_layers(model)
    zeros = [np.zeros((len(x), layer.units), dtype="float32") for layer in dense]
    if name() == "tensorflow":
        import tensorflow as tf

        eps = [tf.constant(z) for z in zeros]
        kernels = [layer.kernel.value for layer in dense]
        with tf.GradientTape() as tape:
            tape.watch(eps)
            logits, records = probe_forward(model, tf.constant(x), eps)
            loss = _loss(tf.constant(y), logits)
        grads = tape.gradient(loss, kernels + eps)
        dW, dz = grads[: len(dense)], grads[len(dense) :]
    elif name() == "jax":
        import jax

        variables = model.variables
        kernel_index = [next(i for i, v in enumerate(variables) if v is layer.kernel) for layer in dense]

        def loss_fn(values, eps):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                logits, records = probe_forward(model, x, eps)
            return _loss(y, logits), records

        values = [v.value for v in variables]
        (_, records), (dvalues, dz) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(values, zeros)
        dW = [dvalues[i] for i in kernel_index]
    else:
        raise NotImplementedError(f"no gradient probe for the {name()} backend")
    to_np = keras.ops.convert_to_numpy
    records = [{k: to_np(v) for k, v in r.items()} for r in records]
    return records, [to_np(g) for g in dz], [to_np(g) for g in dW]
