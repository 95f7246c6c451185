"""trainlab's benchmark: trainlab against what users would otherwise run, side by side, in one run.

    python bench/run.py                      # cases 1-7 on the CPU (case 8 too with --device cuda)
    python bench/run.py --quick              # every case in seconds: a check that the bench runs
    python bench/run.py --cases 1,5 --repeats 5 --out bench/results

Writes OUT/case<N>_<name>.json per case (atomically) and OUT/table.md, and prints the table.
See bench/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))   # trainlab from this checkout, installed or not (the GPU machine)

import torch  # noqa: E402

import cases as K  # noqa: E402
from trainlab.runs import atomic_write_text, to_json  # noqa: E402
import contenders as C  # noqa: E402

FULL = {"epochs": 10, "timing_epochs": 3, "memory_epochs": 2, "repeats": 3, "limit": None, "eval_limit": None,
        "sizes": [1000, 5000, 15000, 30000, 60000], "widths": [128, 512, 2048]}
QUICK = {"epochs": 1, "timing_epochs": 1, "memory_epochs": 1, "repeats": 1, "limit": 2000, "eval_limit": 1000,
         "sizes": [500, 1000, 2000], "widths": [128, 512]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trainlab benchmark: trainlab vs the loops users write today.")
    p.add_argument("--quick", action="store_true",
                   help="seconds, not minutes: 2,000 examples (1,800 train), 1 epoch, 1 repeat, small sweeps")
    p.add_argument("--cases", default=None,
                   help="comma-separated case numbers (default 1-7; 1-8 with --device cuda), or 'all'")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats per case (default 3; quick 1)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run in cases 1-4, 8: accuracy is compared after these (default 10; quick 1)")
    p.add_argument("--timing-epochs", type=int, default=None,
                   help="epochs per run in cases 5 and 7, speed only (default 3; quick 1)")
    p.add_argument("--limit", type=int, default=None,
                   help="data.limit: training examples before the validation split (default all; quick 2000)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where every contender trains")
    p.add_argument("--data-dir", default=None, help="a data root searched first (sets $TRAINLAB_DATA)")
    p.add_argument("--out", default=str(BENCH / "results"), help="folder for the JSON files and table.md")
    # Internal: case 6 runs each contender in a fresh process through these.
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-overrides", default="[]", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> K.Settings:
    base = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else base[name]  # noqa: E731
    device = torch.device(args.device)
    for name in ("repeats", "epochs", "timing_epochs"):
        if pick(name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return K.Settings(quick=args.quick, repeats=pick("repeats"), epochs=pick("epochs"),
                      timing_epochs=pick("timing_epochs"), memory_epochs=min(base["memory_epochs"], pick("epochs")),
                      limit=pick("limit"), eval_limit=base["eval_limit"], device=device,
                      sizes=base["sizes"], widths=base["widths"],
                      matmul_n=(512 if args.quick else 2048) * (4 if device.type == "cuda" else 1),
                      log=lambda msg: print(msg, file=sys.stderr, flush=True))


def parse_cases(text: str | None, device: str) -> list[int]:
    if text is None:
        return [1, 2, 3, 4, 5, 6, 7] + ([8] if device == "cuda" else [])
    if text == "all":
        return sorted(K.CASES)
    try:
        chosen = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--cases {text!r}: give case numbers like 1,2,5 (known: {sorted(K.CASES)})") from None
    unknown = [c for c in chosen if c not in K.CASES]
    if unknown or not chosen:
        raise SystemExit(f"--cases {text!r}: unknown case {unknown}; known: {sorted(K.CASES)}")
    return chosen


# ---------------------------------------------------------------- the record

def environment(argv: list[str]) -> dict:
    """Where and how the figures were taken: goes into every JSON file and the table's header."""
    def git(*a: str) -> str | None:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": "python bench/run.py " + shlex.join(argv),
           "python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
        env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return env


def markdown(result: dict) -> str:
    lines = [f"## {result['title']}", ""]
    for table in result["tables"]:
        if len(result["tables"]) > 1:
            lines += [f"**{table['title']}**", ""]
        lines.append("| " + " | ".join(table["columns"]) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(table["columns"]))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
        lines.append("")
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def provenance(env: dict) -> str:
    """One line: when, by which command, where, at which commit a case was measured."""
    where = f"{env['cpu']}, {env['torch_threads']} torch threads"
    if "cuda_device" in env:
        where += f", {env['cuda_device']}"
    commit = f"{env['git_commit']}{' (uncommitted changes)' if env['git_dirty'] else ''}"
    return (f"{env['date']} · `{env['command']}` · {where} · torch {env['torch']} · commit {commit} · "
            f"load average at start {', '.join(f'{x:.2f}' for x in env['load_average'] or [])}")


def full_table(out: Path) -> str:
    """table.md: every case whose JSON is in `out`, each under the line saying how it was measured.

    Built from the files, not from this run alone: re-running one case (`--cases 5`) replaces its
    section and keeps the others, so the table and the JSON files always agree.
    """
    results = [json.loads(p.read_text()) for p in out.glob("case*_*.json")]
    sections = [f"{markdown(r).rstrip()}\n\n_Measured {provenance(r['env'])}._\n"
                for r in sorted(results, key=lambda r: r["case"])]
    return "# trainlab benchmark\n\n" + "\n".join(sections)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.data_dir:
        os.environ["TRAINLAB_DATA"] = str(Path(args.data_dir).resolve())
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device (torch " + torch.__version__ + ").", file=sys.stderr)
        return 2
    if args.worker:
        out = C.memory_worker(args.worker, json.loads(args.worker_overrides), args.epochs or 1, args.device)
        print(to_json(out, indent=None))
        return 0

    from trainlab import DataError
    chosen = parse_cases(args.cases, args.device)
    s = settings_from(args)
    env = environment(argv)
    out = Path(args.out)
    s.log(f"bench: cases {chosen}, {s.repeats} repeat(s), {s.epochs} epoch(s) ({s.timing_epochs} for timing "
          f"cases), data.limit={s.limit}, device {s.device}, {env['torch_threads']} threads -> {out}")
    for n in chosen:
        t0 = time.perf_counter()
        try:
            result = K.CASES[n](s)
        except DataError as e:
            print(f"bench: case {n} needs data trainlab cannot find:\n{e}", file=sys.stderr)
            return 3
        result.update(env=env, case_seconds=time.perf_counter() - t0)
        atomic_write_text(out / f"case{n}_{result['name']}.json", to_json(result) + "\n")
        s.log(f"[case {n}] done in {result['case_seconds']:.1f} s")
    table = full_table(out)
    atomic_write_text(out / "table.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
