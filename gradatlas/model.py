"""The MLP of one grid cell: 784 -> depth x [Dense -> (BatchNorm) -> activation -> (Dropout)] -> Dense(10).

The output layer is linear (logits) and the loss is applied from logits, which is both numerically
safer and gives the diagnostics a clean pre-activation for the last layer too.
"""

from __future__ import annotations

import keras

from gradatlas import catalog

N_INPUTS, N_CLASSES = 784, 10


def layer_seed(seed: int, layer: int) -> int:
    # A seeded Keras initializer reused across layers would give every layer the same matrix.
    return seed * 1000 + layer


def build(spec: dict) -> keras.Sequential:
    seed = spec["seed"]
    reg = catalog.regularization(spec["regularizer"], spec["regularizer_params"])
    batch_norm = reg.batch_norm_momentum is not None

    def dense(units, layer, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=catalog.initializer(spec["initializer"], spec["initializer_params"], layer_seed(seed, layer)),
            # the bias is redundant right before batch normalization's own shift
            use_bias=not batch_norm or name == "output",
            kernel_regularizer=reg.kernel_regularizer,
            kernel_constraint=reg.kernel_constraint,
            name=name,
        )

    layers = [keras.Input((N_INPUTS,), name="pixels")]
    for i in range(1, spec["depth"] + 1):
        layers.append(dense(spec["width"], i, f"dense_{i}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(momentum=reg.batch_norm_momentum, name=f"batch_norm_{i}"))
        layers.append(catalog.activation_layer(spec["activation"], spec["activation_params"], f"activation_{i}"))
        if reg.dropout_rate:
            layers.append(keras.layers.Dropout(reg.dropout_rate, seed=layer_seed(seed, i), name=f"dropout_{i}"))
    layers.append(dense(N_CLASSES, spec["depth"] + 1, "output"))
    return keras.Sequential(layers, name="mlp")


def compile_model(model: keras.Model, spec: dict, steps_per_epoch: int) -> keras.Model:
    from gradatlas import backend

    schedule = catalog.lr_schedule(
        spec["lr_schedule"], spec["lr_schedule_params"], spec["learning_rate"], steps_per_epoch, spec["epochs"]
    )
    model.compile(
        optimizer=catalog.optimizer(
            spec["optimizer"], spec["optimizer_params"], schedule, spec["clipnorm"], spec["clipvalue"]
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=spec["steps_per_execution"],
        **backend.fit_options(),
    )
    return model


def probe_forward(model: keras.Sequential, x, perturbations: list):
    """Inference-mode forward pass that records, for every Dense layer, its pre-activation z,
    the activation's input u (z after batch normalization) and the block's output a.

    `perturbations[k]` (zeros) is added to the k-th Dense output, so that the gradient of the
    loss with respect to it is dL/dz: the per-layer error signal, in any backend.
    Inference mode: dropout is off and batch normalization uses (and never updates) its moving
    averages, so probing changes nothing in the training.
    """
    records, h = [], x
    for layer in model.layers:
        h = layer(h, training=False)
        if isinstance(layer, keras.layers.Dense):
            h = h + perturbations[len(records)]
            records.append({"z": h, "u": h, "a": h})
        elif isinstance(layer, keras.layers.BatchNormalization):
            records[-1]["u"] = records[-1]["a"] = h
        elif not isinstance(layer, keras.layers.Dropout):  # the activation
            records[-1]["a"] = h
    return h, records


def dense_layers(model: keras.Sequential) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
