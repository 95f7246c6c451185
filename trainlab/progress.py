"""What a run prints while it trains: a bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Optional


class Progress:
    """A rich bar on a terminal, one line per epoch elsewhere (no bar spam in CI logs), or nothing."""

    def __init__(self, mode: str, epochs: int, steps: int, budget: Optional[int] = None):
        """`epochs` rows of `steps` steps each; `budget`: a step budget (train.steps) to count in instead."""
        self.mode = mode if mode != "auto" else ("bar" if sys.stderr.isatty() else "lines")
        self.epochs, self.steps, self.budget, self.bar, self.task = epochs, steps, budget, None, None
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn
            self.bar = Bar(TextColumn("epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
                           MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                           transient=False)
            self.bar.start()

    def start_epoch(self, epoch: int, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task("", total=self.steps, completed=done, epoch=epoch, info="")

    def step(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def end_epoch(self, row: dict) -> None:
        self.say(format_row(row, self.epochs, self.budget))

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        elif self.mode == "lines":
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def format_row(row: dict, epochs: int, steps: Optional[int] = None) -> str:
    """One metrics.jsonl row as a console line: 'epoch 3/10  lr 0.01  0.81s  train_loss 0.41 ...';
    with a step budget (`steps`) it starts 'step 500/2000'."""
    parts = [f"epoch {row['epoch']}/{epochs}" if steps is None else f"step {row['step']}/{steps}"]
    for key, value in row.items():
        if key in ("epoch", "step"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}" if key != "seconds" else f"{value:.2f}s")
    return "  ".join(parts)
