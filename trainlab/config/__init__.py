"""The one typed config: every key, its default and its unit, YAML + dotted overrides.

A package of one-job modules: the sections by topic (data, model, optim, loop, pretrain), the whole
config and its cross-section checks (schema), reading and writing it (load), what any value may be
(values), and the reference page rendered from it (reference). Everything is imported from here,
`from trainlab.config import Config, load_config`, as when it was one file.
"""

from .data import DATASETS, SEED_LIMIT, TEXT_SETS, AugmentConfig, DataConfig
from .load import (KNOWN_KEYS, MAPPING_KEYS, build_config, load_config, parse_override, save_config,
                   set_dotted)
from .loop import EarlyStoppingConfig, EvalConfig, RegularizeConfig, TrainConfig
from .model import ACTIVATIONS, BUILTIN_MODELS, ModelConfig
from .optim import OPTIM_KEYS, OPTIMIZERS, SCHEDULES, LossConfig, OptimConfig, ScheduleConfig
from .pretrain import PretrainConfig
from .schema import Config
from .section import Section

__all__ = [
    "ACTIVATIONS", "BUILTIN_MODELS", "DATASETS", "KNOWN_KEYS", "MAPPING_KEYS", "OPTIMIZERS", "OPTIM_KEYS",
    "SCHEDULES", "SEED_LIMIT", "TEXT_SETS", "AugmentConfig", "Config", "DataConfig", "EarlyStoppingConfig",
    "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig", "PretrainConfig", "RegularizeConfig",
    "ScheduleConfig", "Section", "TrainConfig", "build_config", "load_config", "parse_override", "save_config",
    "set_dotted",
]
