"""Configuration, the lowest layer that knows what a run is: the typed sections of a run (`sections`), Hydra's schema
derived from them (`schema`), the command line's config checked before anything runs (`check`), and the fair
comparison's section (`fair`). Hydra stops at the CLI; everything below receives these frozen dataclasses."""

from bench.config.sections import (
    LATER_DEFAULTS,
    Bias,
    ConfigError,
    DataConfig,
    DataSource,
    DeployConfig,
    MethodConfig,
    ModelConfig,
    ModelSource,
    MonitorConfig,
    Optimizer,
    Precision,
    PromptFormat,
    QuantType,
    RunConfig,
    Strategy,
    Task,
    TensorPolicy,
    TrackerConfig,
    TrainerConfig,
    config_hash,
    field_defaults,
    flatten,
    unknown_keys,
)

__all__ = [
    "Bias", "ConfigError", "DataConfig", "DataSource", "DeployConfig", "LATER_DEFAULTS", "MethodConfig",
    "ModelConfig", "ModelSource",
    "MonitorConfig", "Optimizer", "Precision", "PromptFormat", "QuantType", "RunConfig", "Strategy", "Task",
    "TensorPolicy", "TrackerConfig", "TrainerConfig", "config_hash", "field_defaults", "flatten", "unknown_keys",
]
