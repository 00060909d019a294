"""Configuration: schema (dataclasses with help and choices) < loading (presets, --config, --set) < checks.

Imports run schema/templates -> checks -> loading; this package re-exports what callers use.
"""

from loraqa.config.loading import (
    config_from_dict,
    dump_config,
    load_config,
    load_saved_config,
    merge,
    parse_set,
    preset_names,
)
from loraqa.config.schema import SECTIONS, Config, all_keys, key_help

__all__ = [
    "SECTIONS",
    "Config",
    "all_keys",
    "config_from_dict",
    "dump_config",
    "key_help",
    "load_config",
    "load_saved_config",
    "merge",
    "parse_set",
    "preset_names",
]
