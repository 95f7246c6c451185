"""Command-line parsing only: each command calls one public function of trainlab."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional

from .errors import TrainlabError


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--data-dir", metavar="ROOT", help="data root searched before $TRAINLAB_DATA and the defaults")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlab", description="Train, evaluate and tune neural networks "
                                     "from one config.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a config", description=
                       "Train the model a YAML config describes; overrides are dotted keys, e.g. optim.lr=0.05.")
    t.add_argument("-c", "--config", help="YAML config file (e.g. examples/seed_mlp.yaml)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    t.add_argument("--out", help="run directory (default runs/<config-name>-<timestamp>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    t.add_argument("--smoke", action="store_true", help="2 epochs on 512 examples: a seconds-long end-to-end check")
    _add_common(t)
    return parser


def _run_train(args) -> dict:
    from .config import load_config
    from .train import train

    if args.resume:
        if args.config or args.overrides:
            raise _usage("--resume continues a run with its saved config; drop -c and overrides.")
        result = train(None, resume=args.resume, data_dir=args.data_dir)
    else:
        if not args.config and not args.overrides:
            raise _usage("trainlab train needs -c CONFIG (e.g. -c examples/seed_mlp.yaml) or overrides.")
        cfg = load_config(args.config, args.overrides)
        result = train(cfg, out=args.out, smoke=args.smoke, data_dir=args.data_dir)
    test = result.metrics.get("test", {})
    headline = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
    print(f"test: {headline}")
    print(f"run: {result.run_dir}")
    return result.summary


def _usage(message: str) -> TrainlabError:
    from .errors import ConfigError
    return ConfigError(message)


COMMANDS = {"train": _run_train}


def main(argv: Optional[list[str]] = None) -> int:
    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except TrainlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    if args.json:
        from .runs import to_json
        print(to_json(result, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
