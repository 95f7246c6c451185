"""trainlab: train, evaluate and tune neural networks from one config (public API)."""

__version__ = "0.1.0"

from .compare import compare, sweep_size  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .crossval import cross_validate  # noqa: E402
from .errors import ConfigError, DataError, DivergedError, Interrupted, TrainlabError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .lrfind import lr_find  # noqa: E402
from .predict import predict  # noqa: E402
from .search import search  # noqa: E402
from .train import Result, train, train_step  # noqa: E402

__all__ = ["train", "train_step", "Result", "evaluate", "predict", "cross_validate", "lr_find", "compare",
           "sweep_size", "search", "Config", "load_config", "TrainlabError",
           "ConfigError", "DataError", "DivergedError", "Interrupted", "__version__"]
