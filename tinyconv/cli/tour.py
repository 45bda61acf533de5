"""``tinyconv tour``: the guided tour of backprop (examples/tour/, docs/tour.md).

tinyconv tour               list the steps
tinyconv tour N [-o DIR]    run step N; its PNGs go to DIR (default: here)
tinyconv tour N --source    print step N's script instead of running it
tinyconv tour all [-o DIR]  run every step in order, with its run time
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._common import output_folder


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tour",
        help="a guided tour of backprop in short, checked scripts: list the steps or run one",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("step", nargs="?", metavar="N", help="the step to run (a number, or 'all')")
    p.add_argument(
        "-o", "--output", type=output_folder, metavar="DIR", help="folder for the pictures (default: here)"
    )
    p.add_argument("--source", action="store_true", help="print the script instead of running it")
    p.set_defaults(func=run)


def _list() -> int:
    from ..tools import tour

    folder = tour.tour_dir()
    print(f"The backprop tour: {len(tour.steps(folder))} scripts in {folder} (read docs/tour.md);")
    print("each needs NumPy and Pillow only, unless it says more")
    for s in tour.steps(folder):
        pictures = f"  -> {', '.join(s.writes)}" if s.writes else ""
        needs = f"  (needs {s.needs}; skipped without)" if s.needs else ""
        print(f"  {s.number}. {s.title}  [{s.name}]{pictures}{needs}")
    print("Run one with `tinyconv tour N`, all of them with `tinyconv tour all`.")
    return 0


def _run_one(number, output) -> tuple[int, float]:
    from ..tools import tour

    s = tour.step(number)
    print(f"== step {s.number}: {s.title} ({s.path})", flush=True)
    t0 = time.perf_counter()
    code = tour.run(s.number, output).returncode
    seconds = time.perf_counter() - t0
    where = Path(output) if output else Path(".")
    made = [str(where / name) for name in s.writes if (where / name).is_file()]
    status = "ok" if code == 0 else f"FAILED (exit status {code})"
    print(f"== step {s.number}: {status} in {seconds:.1f} s" + (f"; wrote {', '.join(made)}" if made else ""))
    return code, seconds


def run(args) -> int:
    from ..tools import tour

    if args.step is None:
        return _list()
    if args.source:
        print(tour.step(args.step).path.read_text(encoding="utf-8"), end="")
        return 0
    if args.step != "all":
        return 0 if _run_one(args.step, args.output)[0] == 0 else 1
    results = [(s, *_run_one(s.number, args.output)) for s in tour.steps()]
    print("\nstep  status  seconds  script")
    for s, code, seconds in results:
        print(f"{s.number:>4}  {'ok' if code == 0 else 'FAIL':>6}  {seconds:7.1f}  {s.name}")
    return 0 if all(code == 0 for _, code, _ in results) else 1
