"""Plots and one self-contained HTML page from a run directory's saved files; never trains.

    write_report("runs/seed_mlp-20261128-171500")            # -> RUN/report.html
    write_comparison(["runs/a", "runs/b"], Path("cmp.html"))  # curves overlaid, metrics side by side

Reads only files: config.yaml, metrics.jsonl, summary.json and, after `trainlab evaluate`,
eval/metrics.json, eval/curves.json, eval/predictions.csv, eval/diagnosis.json and
eval/wrong_examples.npz; after `trainlab explain`, eval/attributions.npz and its figures in
eval/explain/. A section whose file is missing is replaced by a one-line note, so a
run that was only trained still gets a page (its diagnosis is then computed from metrics.jsonl).

The page has no scripts and loads nothing: the figures are PNGs embedded as base64 data URIs, the
CSS is inline, the fonts are the viewer's own. Every plot function takes plain data (rows, arrays,
the dicts of trainlab.metrics) and returns a matplotlib Figure, so other commands can reuse them.

runfiles.py reads a run's files, plots.py draws the figures (matplotlib is imported with the first
one), html.py holds the page pieces every command's page is built from, page.py is one run's report
and comparison.py several runs side by side.
"""

from .comparison import HIGHER_IS_BETTER, LOWER_IS_BETTER, render_comparison, write_comparison
from .html import CSS, cell_text, escape, html_image, html_note, html_page, html_section, html_table, png_data_uri
from .page import HEADLINE, render_report, write_report
from .plots import (ANNOTATE_MAX, DPI, FEW_CLASSES, GRID, MAX_CLASSES, SIZE, WRONG_MAX, new_figure, plot_comparison,
                    plot_confusion_matrix, plot_learning_curves, plot_learning_rate, plot_pr_curves,
                    plot_predicted_vs_true, plot_reliability, plot_roc_curves, plot_wrong_examples, shown_classes)
from .runfiles import RunFiles, curve_metrics, load_run, read_predictions

__all__ = [
    "RunFiles", "load_run", "read_predictions", "curve_metrics",
    "new_figure", "plot_learning_curves", "plot_learning_rate", "plot_confusion_matrix", "plot_roc_curves",
    "plot_pr_curves", "plot_reliability", "plot_wrong_examples", "plot_predicted_vs_true", "plot_comparison",
    "shown_classes", "DPI", "SIZE", "MAX_CLASSES", "FEW_CLASSES", "ANNOTATE_MAX", "WRONG_MAX", "GRID",
    "escape", "cell_text", "png_data_uri", "html_image", "html_table", "html_note", "html_section", "html_page", "CSS",
    "HEADLINE", "render_report", "write_report",
    "LOWER_IS_BETTER", "HIGHER_IS_BETTER", "render_comparison", "write_comparison",
]
