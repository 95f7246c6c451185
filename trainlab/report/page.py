"""One run's report page: its sections from the saved files, render_report and write_report."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from ..runs import atomic_write_text
from .html import escape, cell_text, html_image, html_note, html_page, html_section, html_table
from .plots import (plot_confusion_matrix, plot_learning_curves, plot_learning_rate, plot_pr_curves,
                    plot_predicted_vs_true, plot_reliability, plot_roc_curves, plot_wrong_examples, shown_classes)
from .runfiles import RunFiles, curve_metrics, has_column, load_run, read_predictions

HEADLINE = ("accuracy", "balanced_accuracy", "top5_accuracy", "f1_macro", "precision_macro", "recall_macro",
            "roc_auc", "roc_auc_ovr_weighted", "average_precision_macro", "log_loss", "ece",
            "rmse", "mae", "r2", "mse", "loss", "perplexity", "bits_per_char", "bits_per_byte")


def _missing(run: RunFiles, file: str) -> str:
    return html_note(f"No {file} yet: run ", f"trainlab evaluate {run.path}", " first.")


def _headline_section(run: RunFiles) -> tuple[str, str, str]:
    parts = []
    if run.eval:
        ev = run.eval
        keys = [k for k in HEADLINE if k in ev] + sorted(k for k in ev if k.startswith("top") and
                                                          k.endswith("_accuracy") and k not in HEADLINE)
        count = (f"{cell_text(ev['n_tokens'])} tokens" if "n_tokens" in ev else
                 f"{cell_text(ev.get('n_examples', ev.get('n_samples')))} examples")
        what = (f"{escape(ev.get('split', '?'))} split, {count}, "
                f"{escape(ev.get('checkpoint', '?'))} checkpoint")
        parts.append(f"<h3>Evaluation ({what})</h3>" + html_table(["metric", "value"], [(k, ev[k]) for k in keys]))
    else:
        parts.append(html_note("Not evaluated yet: ", f"trainlab evaluate {run.path}",
                               " adds the evaluation metrics and their figures."))
    if run.summary:
        s = run.summary
        metrics = s.get("metrics") or {}
        cols = []
        for split in metrics.values():
            cols += [k for k in (split or {}) if k not in cols]
        table = html_table(["split"] + cols, [[split] + [(metrics[split] or {}).get(c) for c in cols]
                                              for split in metrics])
        info = ", ".join(f"{k.replace('_', ' ')} {cell_text(s.get(k))}" for k in
                         ("epochs_run", "best_epoch", "stopped_because", "seconds", "monitor", "final_checkpoint")
                         if k in s)
        parts.append(f"<h3>Training (summary.json)</h3><p class='meta'>{info}</p>{table}")
    else:
        parts.append(html_note("No summary.json: training has not finished (or was interrupted)."))
    return html_section("headline", "Headline metrics", "".join(parts))


def _diagnosis_section(run: RunFiles) -> tuple[str, str, str]:
    findings, source = run.diagnosis, "From eval/diagnosis.json"
    if findings is None and run.rows:
        from dataclasses import asdict

        from ..diagnose import diagnose
        findings = [asdict(f) for f in diagnose(run.rows, run.config or None)]
        source = "Computed from metrics.jsonl (no eval/diagnosis.json yet)"
    if not findings:
        return html_section("diagnosis", "Diagnosis", html_note("No metrics.jsonl rows: nothing to diagnose."))
    items = []
    for f in findings:
        kind = str(f.get("kind", ""))
        where = f" (epoch {f['epoch']})" if f.get("epoch") is not None else ""
        remedies = " ".join(f"<code>{escape(r)}</code>" for r in f.get("remedies") or [])
        items.append(f"<li><span class='kind k-{escape(kind)}'>{escape(kind.replace('_', ' '))}{escape(where)}</span> "
                     f"{escape(f.get('message', ''))}" + (f"<br>try: {remedies}" if remedies else "") + "</li>")
    howto = (f"<p class='meta'>{escape(source)}. Paste a remedy as an override: "
             f"<code>trainlab train -c {escape(run.path / 'config.yaml')} KEY=VALUE</code></p>")
    return html_section("diagnosis", "Diagnosis", howto + f"<ul class='findings'>{''.join(items)}</ul>")


def _curves_section(run: RunFiles) -> tuple[str, str, str]:
    if not run.rows:
        return html_section("curves", "Learning curves", html_note("No metrics.jsonl rows yet."))
    figs = [html_image(plot_learning_curves(run.rows, run.best_epoch, m), f"{m} per epoch")
            for m in curve_metrics(run.rows)]
    if has_column(run.rows, "lr"):
        figs.append(html_image(plot_learning_rate(run.rows), "learning rate per epoch"))
    return html_section("curves", "Learning curves", f"<div class='figs'>{''.join(figs)}</div>")


def _classification_sections(run: RunFiles) -> list[tuple[str, str, str]]:
    out = []
    ev, classes = run.eval, run.classes
    missing = _missing(run, "eval/metrics.json")
    if ev and ev.get("confusion_matrix") is not None:
        cm = ev["confusion_matrix"]
        names = classes or [str(i) for i in range(len(cm))]
        out.append(html_section("confusion", "Confusion matrix",
                                html_image(plot_confusion_matrix(cm, names), "confusion matrix")))
    else:
        out.append(html_section("confusion", "Confusion matrix", missing))

    curves = run.curves
    no_curves = _missing(run, "eval/curves.json")
    for key, title, alt, score, plot in (
            ("roc", "ROC curves", "ROC curves", "auc", plot_roc_curves),
            ("pr", "Precision-recall curves", "precision-recall curves", "average_precision", plot_pr_curves)):
        body = no_curves
        if curves and curves.get(key):
            _, note = shown_classes({c: (v or {}).get(score) for c, v in curves[key].items() if v})
            body = html_image(plot(curves[key]), alt) + (html_note(f"Showing {note}.") if note else "")
        out.append(html_section(key, title, body, "side"))
    if curves and curves.get("reliability"):
        figure = plot_reliability(curves["reliability"], (ev or {}).get("ece"))
        out.append(html_section("reliability", "Calibration", html_image(figure, "reliability diagram"), "side"))
    else:
        out.append(html_section("reliability", "Calibration", no_curves, "side"))

    if ev and ev.get("per_class"):
        cols = ["precision", "recall", "f1", "support", "roc_auc", "average_precision"]
        rows = [[name] + [(m or {}).get(c) for c in cols] for name, m in ev["per_class"].items()]
        out.append(html_section("per-class", "Per-class metrics", html_table(["class"] + cols, rows)))
    else:
        out.append(html_section("per-class", "Per-class metrics", missing))

    if run.wrong is not None and len(run.wrong.get("images", [])):
        w = run.wrong
        body = html_image(plot_wrong_examples(w["images"], w["true"], w["predicted"], w["confidence"], classes),
                          "most confidently wrong examples")
        out.append(html_section("wrong", "Most confidently wrong examples",
                                html_note("Misclassified examples with the highest predicted probability, "
                                          "captioned true class, predicted class (confidence).") + body))
    elif run.wrong is not None:
        out.append(html_section("wrong", "Most confidently wrong examples", html_note("No misclassified examples.")))
    elif _is_image_run(run):
        out.append(html_section("wrong", "Most confidently wrong examples",
                                _missing(run, "eval/wrong_examples.npz")))
    return out


def _is_image_run(run: RunFiles) -> bool:
    from ..data import IMAGE_SETS
    return (run.config.get("data") or {}).get("name") in IMAGE_SETS


def _regression_sections(run: RunFiles) -> list[tuple[str, str, str]]:
    pairs = None
    if run.predictions is not None:
        try:
            pairs = read_predictions(run.predictions)
        except (OSError, ValueError, csv.Error) as err:
            run.problems.append(f"eval/predictions.csv: {err}")
    if pairs is None or not len(pairs[0]):
        return [html_section("predictions", "Predictions", _missing(run, "eval/predictions.csv (true, predicted)"))]
    return [html_section("predictions", "Predictions", html_image(plot_predicted_vs_true(*pairs), "predicted vs true"))]


def _samples_section(run: RunFiles) -> tuple[str, str, str]:
    """A language model's generated text after each fixed prompt (eval/metrics.json's samples)."""
    samples = (run.eval or {}).get("samples") or []
    if not samples:
        return html_section("samples", "Generated text", _missing(run, "eval/metrics.json with samples"))
    body = "".join(f"<h3>After {escape(repr(s['prompt']))}</h3><pre>{escape(s['prompt'] + s['text'])}</pre>"
                   for s in samples)
    note = "<p class='meta'>Sampled at temperature 0.8 among the 200 most likely tokens, seeded.</p>"
    return html_section("samples", "Generated text", note + body)


def _task(run: RunFiles) -> str:
    if run.eval and run.eval.get("task"):
        return run.eval["task"]
    if (run.config.get("model") or {}).get("name") == "gpt":
        return "language_model"
    if run.eval and "confusion_matrix" in run.eval:
        return "classification"
    regression = has_column(run.rows, "val_rmse") or has_column(run.rows, "train_rmse")
    return "regression" if regression else "classification"


def _attributions_section(run: RunFiles) -> tuple[str, str, str]:
    """What `trainlab explain` wrote: its figures (eval/explain/*.png) and, for tables, the ranking."""
    import base64
    import json

    import numpy as np

    a = run.attributions
    meta = json.loads(str(a["meta"])) if "meta" in a else {}
    kind, method = meta.get("kind", "?"), str(meta.get("method", "?"))
    target = "the predicted next token's logit" if kind == "text" else "the predicted class's logit"
    parts = [f"<p class='meta'>{escape(method.replace('_', ' '))} on the {escape(meta.get('split', '?'))} split, "
             f"{escape(meta.get('checkpoint', '?'))} checkpoint; attributed: {target}. From eval/attributions.npz "
             f"(<code>trainlab explain {escape(run.path)}</code>).</p>"]
    if method == "integrated_gradients" and len(a.get("delta", [])):
        gap = np.abs(a["delta"])
        relative = gap / np.maximum(np.abs(a["output"] - a["baseline_output"]), 1e-12)
        parts.append(f"<p class='meta'>Completeness: the attributions of each example sum to f(x) − f(baseline) "
                     f"within {float(gap.max()):.3g} (at most {100 * float(relative.max()):.3g}% of an example's "
                     "f(x) − f(baseline)).</p>")
    if kind == "table":
        order = np.argsort(-a["mean_abs"], kind="stable")[:30]
        rows = [[str(a["features"][i]), float(a["mean_abs"][i]), float(a["permutation_mean"][i]),
                 float(a["permutation_std"][i])] for i in order]
        parts.append(html_table(["feature", "mean |attribution|", "permutation importance", "± std"], rows))
    figs = []
    for name in meta.get("figures", []):
        file = run.path / name
        if file.is_file():
            uri = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode("ascii")
            figs.append(f'<figure><img src="{uri}" alt="{escape(Path(name).stem)}"></figure>')
    parts.append(f"<div class='figs'>{''.join(figs)}</div>" if figs else html_note("The figures are missing."))
    return html_section("attributions", "Attributions", "".join(parts))


def _config_section(run: RunFiles) -> tuple[str, str, str]:
    if run.config_text is None:
        return html_section("config", "Resolved config", html_note("No config.yaml."))
    return html_section("config", "Resolved config", f"<pre>{escape(run.config_text)}</pre>")


def render_report(run: RunFiles) -> str:
    """The HTML of one run's report (see write_report)."""
    sections = [_headline_section(run), _diagnosis_section(run), _curves_section(run)]
    task = _task(run)
    classification = task == "classification"
    if task == "language_model":
        sections.append(_samples_section(run))
    elif not (run.eval or run.curves or run.wrong or run.predictions or run.diagnosis):
        adds = ("the confusion matrix, ROC and precision-recall curves, calibration and per-class metrics"
                + (", and the most confidently wrong examples" if _is_image_run(run) else "")
                if classification else "the test metrics and a predicted-vs-true plot")
        hint = html_note("Not evaluated yet: ", f"trainlab evaluate {run.path}", f" adds {adds}.")
        sections.append(html_section("evaluation", "Evaluation", hint))
    else:
        sections += _classification_sections(run) if classification else _regression_sections(run)
    if run.attributions is not None:
        try:
            sections.append(_attributions_section(run))
        except (KeyError, ValueError, TypeError, IndexError) as err:  # a file of another layout: noted
            run.problems.append(f"eval/attributions.npz: {type(err).__name__}: {err}")
    sections.append(_config_section(run))
    if run.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
        sections.insert(0, html_section("problems", "Unreadable files", f"<ul>{items}</ul>"))
    data = (run.config.get("data") or {}).get("name")
    model = (run.config.get("model") or {}).get("name")
    subtitle = " · ".join(escape(x) for x in (str(run.path), f"data {data}" if data else "",
                                              f"model {model}" if model else "") if x)
    return html_page(f"trainlab report: {run.name}", subtitle, sections)


def write_report(run_dir: str | Path, out: Optional[str | Path] = None) -> Path:
    """Write one run's self-contained report (default RUN/report.html, atomically); returns its path.

    >>> write_report("runs/seed_mlp-20261128-171500")
    PosixPath('runs/seed_mlp-20261128-171500/report.html')
    """
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(path, render_report(run))
    return path
