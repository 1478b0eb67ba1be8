"""The configuration of a run: validated pydantic models, YAML in and out, ``--set`` overrides."""

from .load import (
    apply_overrides,
    check_key,
    comparable,
    from_dict,
    load_config,
    parse_override,
    save_config,
    set_dotted,
    to_dict,
    valid_keys,
)
from .schema import (
    AugmentConfig,
    DataConfig,
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_key",
    "comparable",
    "from_dict",
    "load_config",
    "parse_override",
    "save_config",
    "set_dotted",
    "to_dict",
    "valid_keys",
]
