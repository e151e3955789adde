"""pipeline.yaml: its schema (schema.py), how it is read (loading.py) and how its errors read (messages.py).

A provider's or a carrier's own section is defined by its plug-in; this package assembles them.
"""

from switchboard.config.loading import (
    BUNDLED_CONFIG,
    CONFIG_ENV_VAR,
    default_config_path,
    load_config,
    parse_config,
)
from switchboard.config.messages import CONFIG_FILE_NAME, ConfigError
from switchboard.config.schema import (
    Config,
    DTMFConfig,
    FallbackConfig,
    PipelineConfig,
    PlayerConfig,
    PriceConfig,
    TurnConfig,
    VADConfig,
    plain_config,
    stage_choices,
)

__all__ = [
    "BUNDLED_CONFIG",
    "CONFIG_ENV_VAR",
    "CONFIG_FILE_NAME",
    "Config",
    "ConfigError",
    "DTMFConfig",
    "FallbackConfig",
    "PipelineConfig",
    "PlayerConfig",
    "PriceConfig",
    "TurnConfig",
    "VADConfig",
    "default_config_path",
    "load_config",
    "parse_config",
    "plain_config",
    "stage_choices",
]
