"""``python -m npnorm.experiments``: list the experiments, or run one and print / save its figures."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import EXPERIMENTS, run, show_progress, to_jsonable
from ._framework import worker_processes


def _rounded(value):
    """Floats to 4 significant digits, inside lists, tuples and dicts too."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _spread_text(value):
    """A spread over seeds, ``{"mean", "min", "max"}``, as ``mean [min, max]``; anything else as it is."""
    if isinstance(value, dict) and set(value) == {"mean", "min", "max"}:
        return f"{value['mean']:.4g} [{value['min']:.4g}, {value['max']:.4g}]"
    if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"mean", "min", "max"}
                                                 for v in value):
        return "; ".join(_spread_text(v) for v in value)
    return None


def _format(value, width: int = 100) -> str:
    text = _spread_text(value) or json.dumps(_rounded(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(data: dict, indent: str = "  ") -> None:
    """The experiment's figures, one key a line (nested dicts one level down)."""
    for key, value in data.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            print(f"{indent}{key}:")
            for k, v in value.items():
                print(f"{indent}  {k}: {_format(v)}")
        elif isinstance(value, dict):
            print(f"{indent}{key}: {{{len(value)} entries}} (in --json)")
        else:
            print(f"{indent}{key}: {_format(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m npnorm.experiments",
        description="Run one of npnorm's experiments: a progress bar, its figures as a table, and "
                    "optionally all of them as JSON (the numbers the book's plots are made of).")
    parser.add_argument("name", nargs="?", help="the experiment (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments with a one-line description")
    setting = parser.add_mutually_exclusive_group()
    setting.add_argument("--quick", dest="quick", action="store_true", default=True,
                         help="the quick setting the book runs (default)")
    setting.add_argument("--full", dest="quick", action="store_false", help="the full setting")
    parser.add_argument("--seed", type=int, default=0, help="the seed (default 0)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="worker processes for experiments made of independent runs (default 1; the "
                             "results do not depend on it)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-' for standard output)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {args.jobs}")

    if args.list or not args.name:
        width = max(len(n) for n in EXPERIMENTS)
        chapter = None
        for exp in EXPERIMENTS.values():
            if exp.chapter != chapter:
                chapter = exp.chapter
                print(f"{chapter}:")
            print(f"  {exp.name:<{width}}  {exp.description}")
        if not args.list:
            print("\nrun one with: python -m npnorm.experiments NAME [--quick|--full] [--seed S] [--jobs N] [--json FILE]")
        return 0
    if args.name not in EXPERIMENTS:
        parser.error(f"no experiment named {args.name!r}; choose from: {', '.join(EXPERIMENTS)}")

    setting_name = "quick" if args.quick else "full"
    print(f"{args.name} ({setting_name} setting, seed {args.seed}): {EXPERIMENTS[args.name].description}",
          file=sys.stderr)
    t0 = time.perf_counter()
    with show_progress(True), worker_processes(args.jobs):
        data = to_jsonable(run(args.name, quick=args.quick, seed=args.seed))
    seconds = time.perf_counter() - t0
    record = {"experiment": args.name, "setting": setting_name, "seed": args.seed,
              "seconds": round(seconds, 2), "results": data}
    if args.json == "-":
        json.dump(record, sys.stdout, indent=1)
        print()
        return 0
    print_table(data)
    print(f"({seconds:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
