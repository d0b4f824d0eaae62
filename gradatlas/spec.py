"""The run spec: everything one training needs, fully resolved, as one typed, frozen object.

`gradatlas.grid.run_spec` builds it from the config and a grid cell; the engine, the rules,
aggregation (which compares a run folder's recorded spec with the current one) and the study
presets all take this object. `run.json` records it as a plain dict (`as_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class RunSpec:
    seed: int
    initializer: str
    activation: str
    optimizer: str
    regularizer: str
    lr_schedule: str
    learning_rate: float
    depth: int
    width: int
    batch_size: int
    clipnorm: float | None
    clipvalue: float | None
    epochs: int
    patience: int
    target_accuracy: float
    stall_accuracy: float
    backend: str
    data: str  # the prepared data's content key (config.data_key): other data, another training
    validation_size: int
    train_subset: int | None
    probe_size: int
    early_steps: tuple[int, ...]
    initializer_params: dict
    activation_params: dict
    optimizer_params: dict
    regularizer_params: dict
    lr_schedule_params: dict

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"run spec: unknown keys {sorted(unknown)}")
        return cls(**(dict(values) | {"early_steps": tuple(values["early_steps"])}))

    def as_dict(self) -> dict:
        # fields are scalars, a tuple and dicts of parameters: copying those dicts makes it deep;
        # dataclasses.asdict recurses into every value (15 s of planning 100,000 runs)
        out = {name: copy.deepcopy(value) if isinstance(value, dict) else value for name, value in vars(self).items()}
        out["early_steps"] = list(self.early_steps)
        return out

    def key(self) -> str:
        """A canonical string: two specs are the same training iff their keys are equal."""
        return json.dumps(self.as_dict(), sort_keys=True, default=str)

    def replace(self, **changes) -> "RunSpec":
        return dataclasses.replace(self, **changes)
