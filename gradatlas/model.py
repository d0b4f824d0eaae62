"""The MLP of one grid cell: 784 -> depth x [Dense -> (BatchNorm) -> activation -> (Dropout)] -> Dense(10).

The output layer is linear (logits) and the loss is applied from logits, which is both numerically
safer and gives the diagnostics a clean pre-activation for the last layer too.

`build(spec)` is the run's own model, with its regularizer and constraint attached: what
`model.keras` holds. `build(spec, packed=True)` is the same network as the training engine runs it
inside a pack: no regularizer or constraint attached (the engine applies them with each member's own
factors) and, when the pack has dropout, `MemberDropout` layers whose rate is a variable, so that
members with different rates (0 = off) share one compiled graph.
"""

from __future__ import annotations

import hashlib

import keras

from gradatlas import catalog

N_INPUTS, N_CLASSES = 784, 10


# Keras seeds are uint32. Layer indices stay below LAYER_SLOTS (the schema caps depth at 200).
SEED_LIMIT, LAYER_SLOTS = 2**32, 500


def layer_seed(seed: int, layer: int) -> int:
    """The Keras seed of one layer (initializer, dropout masks) of the run seeded `seed`.

    A seeded Keras initializer reused across layers would give every layer the same matrix, hence
    one seed per layer: seed * 1000 + layer wherever that fits in a uint32 (every seed up to
    4,294,967, so runs of those seeds are bit-identical to earlier releases). A larger seed is
    mapped to 1000 * h + 500 + layer, h = sha256(seed, layer) mod 4,294,967: deterministic, in
    range, distinct per layer of a seed, and never a smaller seed's value, whose last three
    digits are the layer (< 500).
    """
    if not 0 <= layer < LAYER_SLOTS:
        raise ValueError(f"layer {layer} is not in 0 .. {LAYER_SLOTS - 1}")
    direct = seed * 1000 + layer
    if direct < SEED_LIMIT:
        return direct
    digest = hashlib.sha256(f"gradatlas-layer-seed:{seed}:{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (SEED_LIMIT // 1000) * 1000 + LAYER_SLOTS + layer


@keras.saving.register_keras_serializable(package="gradatlas")
class MemberDropout(keras.layers.Layer):
    """Dropout with its rate in a non-trainable variable, so each member of a pack has its own.

    `keras.layers.Dropout` takes the rate as a Python float (its JAX kernel branches on it), so it
    cannot vary inside one vectorized program. Same semantics: inverted dropout, seeded masks.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.initial_rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_rate), trainable=False, name="rate"
        )

    def call(self, inputs, training=False):
        if not training:
            return inputs
        keep = 1.0 - self.rate
        # uniform in [0, 1): with rate 0 every unit is kept and x / 1 is x exactly
        mask = keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator) < keep
        return keras.ops.where(mask, inputs / keep, keras.ops.zeros_like(inputs))

    def get_config(self):
        return super().get_config() | {"rate": self.initial_rate, "seed": self.seed}


def build(spec, packed: bool = False, dropout: bool | None = None) -> keras.Sequential:
    """The member's network. `dropout` (packed only): whether the pack has dropout layers."""
    seed = spec.seed
    reg = catalog.regularization(spec.regularizer, spec.regularizer_params)
    batch_norm = reg.batch_norm_momentum is not None
    with_dropout = (reg.dropout_rate > 0) if dropout is None else dropout

    def dense(units, layer, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=catalog.initializer(spec.initializer, spec.initializer_params, layer_seed(seed, layer)),
            # the bias is redundant right before batch normalization's own shift
            use_bias=not batch_norm or name == "output",
            kernel_regularizer=None if packed else reg.kernel_regularizer,
            kernel_constraint=None if packed else reg.kernel_constraint,
            name=name,
        )

    layers = [keras.Input((N_INPUTS,), name="pixels")]
    for i in range(1, spec.depth + 1):
        layers.append(dense(spec.width, i, f"dense_{i}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(momentum=reg.batch_norm_momentum, name=f"batch_norm_{i}"))
        layers.append(catalog.activation_layer(spec.activation, spec.activation_params, f"activation_{i}"))
        if with_dropout:
            drop = MemberDropout if packed else keras.layers.Dropout
            layers.append(drop(reg.dropout_rate, seed=layer_seed(seed, i), name=f"dropout_{i}"))
    layers.append(dense(N_CLASSES, spec.depth + 1, "output"))
    return keras.Sequential(layers, name="mlp")


def probe_forward(model: keras.Sequential, x, perturbations: list):
    """The forward pass of the diagnostics probe, recording for every Dense layer its
    pre-activation z, the activation's input u (z after batch normalization) and the block's output a.

    `perturbations[k]` (zeros) is added to the k-th Dense output, so that the gradient of the
    loss with respect to it is dL/dz: the per-layer error signal.
    Gradients are probed as they flow in training: batch normalization normalizes with the probe
    batch's own statistics (its moving averages are not updated: the caller discards the new
    state); dropout is off, so the probe draws no random numbers.
    """
    records, h = [], x
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            h = layer(h) + perturbations[len(records)]
            records.append({"z": h, "u": h, "a": h})
        elif isinstance(layer, keras.layers.BatchNormalization):
            h = layer(h, training=True)
            records[-1]["u"] = records[-1]["a"] = h
        elif isinstance(layer, (keras.layers.Dropout, MemberDropout)):
            continue
        else:  # the activation
            h = layer(h)
            records[-1]["a"] = h
    return h, records


def dense_layers(model: keras.Sequential) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
