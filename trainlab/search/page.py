"""report.html of a search: the best trial, the figures, its curves and the table of trials."""

from __future__ import annotations

from pathlib import Path

from ..runs import atomic_write_text, read_json
from .options import Options
from .plots import plot_heatmap, plot_metric_vs_param, plot_parallel_coordinates
from .spaces import Param, fmt


def write_report(out_dir: Path, study, params: dict[str, Param], opts: Options, rows: list[dict],
                 result: dict) -> Path:
    """report.html: the best trial, metric vs each parameter, heat map, parallel coordinates, curves."""
    from ..report import (curve_metrics, escape, html_image, html_note, html_page, html_section, html_table,
                         plot_learning_curves)
    best = result.get("best") or {}
    best_number = best.get("trial")
    sections = []
    lines = [f"<p>Best trial <b>{escape(best_number)}</b>: {escape(opts.metric)} = "
             f"<b>{escape(fmt(best.get('value')))}</b> "
             f"({escape(opts.direction)}), chosen on {escape(opts.metric.split('.')[0])}; parameters "
             + ", ".join(f"<code>{escape(k)}={escape(fmt(v))}</code>" for k, v in (best.get("params") or {}).items())
             + ".</p>"]
    if best.get("test"):
        lines.append("<p>Test split, evaluated once on the best trial: "
                     + ", ".join(f"{escape(k)} {v:.4f}" for k, v in best["test"].items()) + ".</p>")
    lines.append(html_note("Train it again: ", f"trainlab train -c {out_dir / 'best.yaml'}"))
    sections.append(html_section("best", "Best trial", "".join(lines)))
    figs = [html_image(plot_metric_vs_param(p, rows, opts.metric, best_number), f"{opts.metric} vs {p.key}")
            for p in params.values()]
    sections.append(html_section("params", "Metric vs each parameter", f"<div class='figs'>{''.join(figs)}</div>"))
    plist = list(params.values())
    if opts.strategy == "grid" and len(plist) == 2:
        heatmap = plot_heatmap(plist[0], plist[1], rows, opts.metric)
        sections.append(html_section("heatmap", "Heat map", html_image(heatmap, "heat map of the grid")))
    if len(plist) >= 2 and any(r["value"] is not None for r in rows):
        sections.append(html_section("parallel", "Parallel coordinates",
                                     html_image(plot_parallel_coordinates(params, rows, opts.metric, opts.direction),
                                            "parallel coordinates")))
    run_dir = next((r["run_dir"] for r in rows if r["trial"] == best_number), None)
    if run_dir and (Path(run_dir) / "metrics.jsonl").is_file():
        from ..runs import RunDir
        history = RunDir(Path(run_dir)).read_metrics()
        summary = read_json(Path(run_dir) / "summary.json") if (Path(run_dir) / "summary.json").is_file() else {}
        curves = [html_image(plot_learning_curves(history, summary.get("best_epoch"), m), f"best trial's {m}")
                  for m in curve_metrics(history)]
        sections.append(html_section("curves", "Best trial's curves", f"<div class='figs'>{''.join(curves)}</div>"))
    header = ["trial", "state", "value", *params, "seconds"]
    ranked = sorted(rows, key=lambda r: (r["value"] is None,
                                         -(r["value"] or 0) if opts.direction == "maximize" else (r["value"] or 0)))
    table = html_table(header, [[str(r["trial"]), r["state"], r["value"], *[fmt(r[k]) for k in params], r["seconds"]]
                                for r in ranked])
    sections.append(html_section("trials", "Trials", f"<div class='wide'>{table}</div>"))
    subtitle = f"{escape(out_dir)} · {escape(opts.strategy)} · {len(rows)} trials · study {escape(opts.study)}"
    path = out_dir / "report.html"
    atomic_write_text(path, html_page(f"trainlab search: {out_dir.name}", subtitle, sections))
    return path
