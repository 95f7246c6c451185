"""Command-line parsing only: each command calls one public function of trainlab."""

from __future__ import annotations

import argparse
import os
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
    _add_run_arguments(t)
    d = t.add_argument_group("several processes (torch.distributed's elastic launcher, as torchrun)")
    d.add_argument("--nproc", type=int, metavar="N", help="train on N processes of this machine (one GPU each "
                   "on CUDA); train.batch_size stays the global batch")
    d.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="restart the group up to K times when a process dies; it resumes from last.pt")
    d.add_argument("--nnodes", default="1", metavar="N|MIN:MAX", help="machines taking part (default 1)")
    d.add_argument("--node-rank", type=int, metavar="R", help="this machine's rank among --nnodes")
    d.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="c10d rendezvous address every machine reaches")
    d.add_argument("--rdzv-timeout", type=int, default=60, metavar="SECONDS",
                   help="how long the rendezvous waits for every machine (default 60)")

    pt = sub.add_parser("pretrain", help="pre-train an image encoder without labels (self-supervised)",
                        description="Self-supervised pre-training of the config's image encoder on its training "
                        "images, labels unused: SimCLR's contrastive loss or masked reconstruction "
                        "(pretrain.objective); each evaluation scores a linear probe. Start a classifier from "
                        "it with model.init_from=RUN_DIR.")
    _add_run_arguments(pt)

    e = sub.add_parser("evaluate", help="score a trained run on its test (or val) split and write a report",
                       description="Metrics, predictions.csv, diagnosis and report.html of a trained run, "
                       "written into RUN_DIR/eval/ and RUN_DIR/report.html.")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a folder `trainlab train` wrote")
    e.add_argument("--split", help="split to score: test (default; val for a text run without a test part), "
                   "val or train")
    _add_common(e)

    r = sub.add_parser("report", help="write report.html for a run, or overlay several runs side by side",
                       description="One self-contained HTML page from the saved files of one run (RUN_DIR/report.html) "
                       "or of several runs (curves overlaid, metrics side by side; default runs/compare-<time>.html).")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders `trainlab train` wrote")
    r.add_argument("--out", help="the HTML file to write")
    r.add_argument("--json", action="store_true", help="print {\"report\": path} as one JSON object on the last line")

    p = sub.add_parser("predict", help="classify images or CSV rows with a trained run",
                       description="Predicted class and probabilities (or value) for an image file, a folder "
                       "of images, or a CSV file with the training data's feature columns.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder `trainlab train` wrote")
    p.add_argument("input", metavar="INPUT", help="image file, folder of images, or CSV file")
    p.add_argument("--onnx", metavar="FILE", help="predict with this file `trainlab export --format onnx` wrote "
                   "(onnxruntime) instead of the run's checkpoint")
    _add_common(p)
    g = sub.add_parser("generate", help="sample text from a trained language-model run",
                       description="Continue a prompt with a trained gpt run's best weights, one token at a "
                       "time against a key-value cache; prints the text and the tokens per second.")
    g.add_argument("run_dir", metavar="RUN_DIR", help="a folder `trainlab train` wrote for model.name=gpt")
    g.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    g.add_argument("--tokens", type=int, default=500, help="tokens to generate (default 500)")
    g.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int, default=200, help="sample among the K most likely tokens (default 200)")
    g.add_argument("--top-p", type=float, help="sample within the nucleus of probability P (default off)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    g.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    _add_model_selection(sub)
    _add_search(sub)
    _add_check(sub)
    _add_explain(sub)
    _add_export(sub)
    return parser


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What train and pretrain take: a config, overrides, the run directory, --resume, --smoke."""
    p.add_argument("-c", "--config", help="YAML config file (e.g. examples/seed_mlp.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--out", help="run directory (default runs/<config-name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--smoke", action="store_true", help="2 epochs on 512 examples: a seconds-long end-to-end check")
    _add_common(p)


def _run_pretrain(args) -> dict:
    if args.resume and (args.config or args.overrides):
        raise _usage("--resume continues a run with its saved config; drop -c and overrides.")
    from .pretrain import pretrain
    if args.resume:
        result = pretrain(resume=args.resume, data_dir=args.data_dir)
    else:
        result = pretrain(_load_for(args, "pretrain"), out=args.out, smoke=args.smoke, data_dir=args.data_dir)
    return _print_result(result)


def _print_result(result) -> dict:
    """A finished run's headline (test metrics, or val where the split has no test part) and folder."""
    split = "test" if "test" in result.metrics else "val"  # a text split by position may have no test part
    scores = result.metrics.get(split, {})
    headline = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
    print(f"{split}: {headline}")
    print(f"run: {result.run_dir}")
    return result.summary


def _run_train(args) -> dict:
    # Usage is checked before torch is imported: a wrong command line answers at once.
    if args.resume and (args.config or args.overrides):
        raise _usage("--resume continues a run with its saved config; drop -c and overrides.")
    if args.nproc is not None:
        return _launch_train(args)
    if args.resume:
        from .train import train
        result = train(None, resume=args.resume, data_dir=args.data_dir)
    else:
        cfg = _load_for(args, "train")
        from .train import train
        result = train(cfg, out=args.out, smoke=args.smoke, data_dir=args.data_dir)
    return _print_result(result)


def _launch_train(args) -> dict:
    """--nproc: the same command on N processes through torch.distributed.run; its exit code is ours."""
    import time

    worker = ["train"]
    if args.resume:
        worker += ["--resume", args.resume]
        device = "auto"
    else:
        cfg = _load_for(args, "train")
        # The folder is named here, not by rank 0, so a group restarted by --max-restarts finds it.
        out = args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        worker += ["-c", args.config] if args.config else []
        worker += [*args.overrides, "--out", out]
        worker += ["--smoke"] if args.smoke else []
        device = cfg.train.device
    worker += ["--data-dir", args.data_dir] if args.data_dir else []
    worker += ["--json"] if args.json else []
    from .launch import launch
    code = launch(worker, args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                  rdzv_endpoint=args.rdzv_endpoint, rdzv_timeout=args.rdzv_timeout,
                  max_restarts=args.max_restarts, device=device)
    raise SystemExit(code)  # rank 0 printed the result; --json's line too


def _run_report(args) -> dict:
    import time
    from pathlib import Path

    from .report import write_comparison, write_report

    if len(args.run_dirs) == 1:
        path = write_report(args.run_dirs[0], out=args.out)
    else:
        out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.html"
        path = write_comparison(args.run_dirs, out)
    print(f"report: {path}")
    return {"report": str(path)}


def _run_evaluate(args) -> dict:
    from .evaluate import evaluate, format_evaluation

    result = evaluate(args.run_dir, split=args.split, data_dir=args.data_dir)
    print(format_evaluation(result))
    return result


def _run_predict(args) -> dict:
    from .predict import format_predictions, predict

    predictions = predict(args.run_dir, args.input, data_dir=args.data_dir, onnx=args.onnx)
    if not args.json:
        print(format_predictions(predictions))
    return {"run_dir": args.run_dir, "input": args.input, "predictions": predictions}


def _run_generate(args) -> dict:
    from .generate import generate

    result = generate(args.run_dir, args.prompt, tokens=args.tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if not args.json:
        print(result["prompt"] + result["text"])
    print(f"{result['tokens']} tokens in {result['seconds']:.2f} s ({result['tokens_per_second']:.0f} tokens/s)",
          file=sys.stderr)
    return result


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config file (e.g. examples/seed_mlp.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 32,128,512")


def _add_model_selection(sub) -> None:
    """cv, lr-find, compare, sweep-size: model selection over train()."""
    c = sub.add_parser("cv", help="k-fold cross-validation: mean, std and a 95%% interval", description=
                       "K-fold cross-validation on the training data (train + val; the test split is not used), "
                       "stratified for classification; one run per fold, cv.json and report.html.")
    _config_args(c)
    c.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    c.add_argument("--repeats", type=int, default=1, help="repeat K-fold with new shuffles (default 1)")
    c.add_argument("--stratified", action=argparse.BooleanOptionalAction, default=None,
                   help="keep class proportions in every fold (default: on for classification)")
    c.add_argument("--metric", help="split.metric per fold (default val.accuracy, or val.loss for regression)")
    c.add_argument("--out", help="output folder (default runs/<config-name>-cv-<timestamp>)")
    _add_common(c)

    f = sub.add_parser("lr-find", help="learning-rate range test: suggested lr and the plot", description=
                       "Raise the lr exponentially over a few hundred mini-batches from a fresh model, record the "
                       "smoothed loss, stop on divergence; suggests the steepest-descent lr and a safe lr.")
    _config_args(f)
    f.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    f.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (default 10)")
    f.add_argument("--steps", type=int, default=300, help="mini-batches over the range (default 300)")
    f.add_argument("--out", help="output folder (default runs/<config-name>-lr-find-<timestamp>)")
    _add_common(f)

    m = sub.add_parser("compare", help="the same task under several values of config keys, N seeds each",
                       description="Train every value of --vary (the cartesian product of several), N seeds each; "
                       "mean ± std table, paired t-tests against the best value, overlaid learning curves.")
    _config_args(m)
    m.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a config key and its values, read as YAML; commas inside brackets do not split "
                   "(model.hidden=[64],[128,64]); ';' also separates (model.hidden=[64];[128,64])")
    m.add_argument("--seeds", type=int, default=3, help="seeds per value, train.seed 0..N-1 (default 3)")
    m.add_argument("--metric", help="split.metric to rank and test (default val.accuracy, or val.loss)")
    m.add_argument("--out", help="output folder (default runs/<config-name>-compare-<timestamp>)")
    _add_common(m)

    w = sub.add_parser("sweep-size", help="MLP depth x width against train and val accuracy (capacity curve)",
                       description="Train an MLP with DEPTH hidden layers of WIDTH units for every pair; "
                       "parameters against final train and validation accuracy.")
    _config_args(w)
    w.add_argument("--widths", type=_int_list, required=True, help="hidden layer widths, e.g. 32,128,512")
    w.add_argument("--depths", type=_int_list, default=[1], help="numbers of hidden layers, e.g. 1,2 (default 1)")
    w.add_argument("--out", help="output folder (default runs/<config-name>-sweep-size-<timestamp>)")
    _add_common(w)


def _load_for(args, command: str):
    from .config import load_config

    if not args.config and not args.overrides:
        raise _usage(f"trainlab {command} needs -c CONFIG (e.g. -c examples/seed_mlp.yaml) or overrides.")
    return load_config(args.config, args.overrides)


def _run_cv(args) -> dict:
    cfg = _load_for(args, "cv")  # usage and config errors before torch is imported
    from .crossval import cross_validate, format_cv

    cv = cross_validate(cfg, folds=args.folds, repeats=args.repeats, stratified=args.stratified,
                        out=args.out, data_dir=args.data_dir, metric=args.metric)
    print(format_cv(cv))
    return cv


def _run_lr_find(args) -> dict:
    cfg = _load_for(args, "lr-find")  # usage and config errors before torch is imported
    from .lrfind import format_lr_find, lr_find

    found = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                    out=args.out, data_dir=args.data_dir)
    print(format_lr_find(found))
    return found


def _run_compare(args) -> dict:
    cfg = _load_for(args, "compare")  # usage and config errors before torch is imported
    from .compare import compare, format_compare, parse_varies

    result = compare(cfg, parse_varies(args.vary), seeds=args.seeds, out=args.out,
                     data_dir=args.data_dir, metric=args.metric)
    print(format_compare(result))
    return result


def _run_sweep_size(args) -> dict:
    cfg = _load_for(args, "sweep-size")  # usage and config errors before torch is imported
    from .compare import format_sweep, sweep_size

    sweep = sweep_size(cfg, widths=args.widths, depths=args.depths, out=args.out,
                       data_dir=args.data_dir)
    print(format_sweep(sweep))
    return sweep


def _add_search(sub) -> None:
    s = sub.add_parser("search", help="grid, random or Bayesian (TPE) search over config keys, trials packed",
                       description="Search a space of dotted config keys (-s SPACE, YAML) around a config with "
                       "Optuna; trials of one MLP shape train together as one computation (--packed). Writes "
                       "results.csv, best.yaml and report.html; the best trial is evaluated once on test.")
    _config_args(s)
    s.add_argument("-s", "--space", help="YAML search space, e.g. optim.lr: {loguniform: [1.0e-3, 1.0], grid: 8}")
    s.add_argument("--strategy", default="grid", choices=["grid", "random", "tpe"],
                   help="grid (every point, default), random or tpe (--trials samples)")
    s.add_argument("--trials", type=int, help="trials to run (grid: at least the grid's size; random/tpe: default 20)")
    s.add_argument("--metric", default="val.accuracy", help="the train.* or val.* metric to choose by "
                   "(default val.accuracy)")
    s.add_argument("--direction", choices=["maximize", "minimize"],
                   help="default: maximize for accuracy, minimize for losses")
    s.add_argument("--out", help="output folder (default runs/<config-name>-search-<timestamp>)")
    s.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True,
                   help="train trials of one shape as one computation (default on)")
    s.add_argument("--pack-size", type=int, metavar="K", help="at most K trials per pack (default 32; 8 for tpe)")
    s.add_argument("--pruner", choices=["none", "median", "halving", "hyperband"], help="Optuna pruner (default none)")
    s.add_argument("--storage", metavar="URL", help="shared study storage, e.g. postgresql://user:pw@host/db "
                   "(default: a journal file in the output folder)")
    s.add_argument("--study", metavar="NAME", help="study name, shared by every worker (default 'search')")
    s.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="with --storage: heartbeat interval; a dead worker's trials are retried (default 10)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    s.add_argument("--resume", metavar="DIR", help="continue an interrupted search in DIR")
    _add_common(s)


def _run_search(args) -> dict:
    from .search import search

    if args.resume:
        if args.config or args.overrides or args.space:
            raise _usage("--resume continues a search with its saved config and space; drop -c, -s and overrides.")
        result = search(None, resume=args.resume, storage=args.storage, data_dir=args.data_dir)
    else:
        if not args.space:
            raise _usage("trainlab search needs -s SPACE, a YAML file such as examples/spaces/lr.yaml.")
        result = search(_load_for(args, "search"), args.space, strategy=args.strategy, trials=args.trials,
                        metric=args.metric, direction=args.direction, out=args.out, packed=args.packed,
                        pack_size=args.pack_size, storage=args.storage, study=args.study, pruner=args.pruner,
                        seed=args.seed, heartbeat=args.heartbeat, data_dir=args.data_dir)
    print(f"search: {result['out_dir']} (results.csv, best.yaml, report.html)")
    return result


def _add_check(sub) -> None:
    k = sub.add_parser("check", help="dry run: config diff, data, model summary, step timing and estimates",
                       description="What a careful user does before training: resolve and validate the config "
                       "(keys that differ from the defaults), find and verify the data (where from, split sizes), "
                       "summarise the model (layers, output shapes, parameters, multiply-accumulates per example) "
                       "and time a few training steps on a copy of it to estimate the epoch and run time. "
                       "Writes nothing unless --out is given (then DIR/check.json).")
    _config_args(k)
    k.add_argument("--out", metavar="DIR", help="write the check as DIR/check.json (default: write nothing)")
    k.add_argument("--steps", type=int, default=10, metavar="N",
                   help="training steps to time after 2 warm-up steps; stops early after ~2 s (default 10)")
    k.add_argument("--pretrain", action="store_true", help="check what `trainlab pretrain` would do with the config")
    _add_common(k)


def _run_check(args) -> dict:
    cfg = _load_for(args, "check")  # usage and config errors before torch is imported
    from .check import check, format_check

    result = check(cfg, data_dir=args.data_dir, out=args.out, steps=args.steps, pretrain=args.pretrain)
    print(format_check(result))
    return result


def _add_export(sub) -> None:
    x = sub.add_parser("export", help="write a trained run's model as ONNX, torch.export, TorchScript or a "
                       "TensorFlow SavedModel, verified",
                       description="Write the run's best checkpoint (as predict uses) as one file (a SavedModel: one "
                       "folder) with the input normalisation inside: it takes raw pixels (uint8 0-255), raw table "
                       "feature values or token ids. The file is loaded back (onnxruntime, torch.export.load, "
                       "torch.jit.load, tf.saved_model.load) and compared with the trained model on up to --check "
                       "test examples before it is written. Runs of either train.backend export every format.")
    x.add_argument("run_dir", metavar="RUN_DIR", help="a folder `trainlab train` wrote")
    x.add_argument("--format", default="onnx", help="onnx (default), pt2 (torch.export), torchscript, or "
                   "saved_model (TensorFlow; model.name mlp, cnn or resnet)")
    x.add_argument("--out", metavar="FILE", help="file to write (default RUN_DIR/export/model.<format's suffix>)")
    x.add_argument("--check", type=int, default=1000, metavar="N",
                   help="test examples the file is compared on (default 1000)")
    _add_common(x)


def _run_export(args) -> dict:
    from .export import export, format_export  # the package imports torch only past the format check

    result = export(args.run_dir, args.format, out=args.out, data_dir=args.data_dir, check=args.check)
    print(format_export(result))
    return result


def _add_explain(sub) -> None:
    x = sub.add_parser("explain", help="attributions (Captum): why a trained run decides as it does",
                       description="Attribute a trained run's predictions to its inputs with Captum: heat maps of "
                       "each class's most confident correct and wrong images; per-feature attributions beside "
                       "permutation importance for tables; token attributions and attention maps for gpt runs. "
                       "Writes RUN_DIR/eval/attributions.npz, RUN_DIR/eval/explain/*.png and report.html.")
    x.add_argument("run_dir", metavar="RUN_DIR", help="a folder `trainlab train` wrote")
    x.add_argument("--method", default="integrated_gradients",
                   help="integrated_gradients (default), saliency or occlusion")
    x.add_argument("--examples", type=int, metavar="N", help="images per class and kind (default 1), table rows "
                   "shown (default 8), or prompts cut from the split (default 4)")
    x.add_argument("--split", help="test (default; val when the run has no test split) or val")
    x.add_argument("--prompt", help="gpt runs: the text whose next token is explained (default: windows of the split)")
    _add_common(x)


def _run_explain(args) -> dict:
    from .explain import explain, format_explanation  # the package imports torch and captum past its checks

    result = explain(args.run_dir, method=args.method, examples=args.examples, split=args.split,
                     data_dir=args.data_dir, prompt=args.prompt)
    print(format_explanation(result))
    return result


def _usage(message: str) -> TrainlabError:
    from .errors import ConfigError
    return ConfigError(message)


COMMANDS = {
    "train": _run_train,
    "pretrain": _run_pretrain,
    "evaluate": _run_evaluate,
    "report": _run_report,
    "predict": _run_predict,
    "generate": _run_generate,
    "cv": _run_cv,
    "lr-find": _run_lr_find,
    "compare": _run_compare,
    "sweep-size": _run_sweep_size,
    "search": _run_search,
    "check": _run_check,
    "export": _run_export,
    "explain": _run_explain,
}


def main(argv: Optional[list[str]] = None) -> int:
    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    if int(os.environ.get("RANK", "0")) > 0:  # a torchrun worker other than rank 0: errors only
        sys.stdout = open(os.devnull, "w")
    try:
        result = COMMANDS[args.command](args)
    except TrainlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except SystemExit as e:  # --nproc's job ended with this code; a second SIGTERM ends with 143
        return e.code if isinstance(e.code, int) else 1
    if args.json:
        from .runs import to_json
        print(to_json(result, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
