"""The guided tour of backprop: find and run the numbered scripts of ``examples/tour/``.

The tour is a set of plain scripts, ``NN_name.py``, each a short docstring
("Step N: title", what it shows, "Writes a.png." for the pictures it makes,
"Needs X." for what it needs beyond NumPy and Pillow; without it the step
says so and exits 0),
code that prints what it shows, and assertions that fail the script when a
printed claim stops holding. ``docs/tour.md`` walks through them in order.

Where they live: in the source repository's ``examples/tour/``, not inside the
package. A learner reads them beside the code, and they use the bundled
``weights/`` and ``examples/digits/``, which are also only in the repository.
``tour_dir`` looks in ``$TINYCONV_TOUR`` when it is set, else in
``examples/tour`` next to the package (a source checkout or an editable
install, ``pip install -e .``), and otherwise says how to get it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

#: Environment variable naming a folder of tour scripts, searched first.
TOUR_ENV = "TINYCONV_TOUR"
#: Where a source checkout (or an editable install) keeps the tour.
REPOSITORY_TOUR = Path(__file__).resolve().parents[2] / "examples" / "tour"

_NAME = re.compile(r"^(\d\d)_\w+\.py$")
_TITLE = re.compile(r"^Step \d+:\s*")


@dataclass(frozen=True)
class Step:
    """One script of the tour.

    number: its place in the tour (1, 2, ...), from the file name "NN_name.py".
    path:   the script.
    title:  the first line of its docstring without the "Step N:" prefix.
    writes: the PNG files it promises ("Writes a.png, b.png." in its docstring),
            written into its working directory (or ``--out``).
    needs:  what it needs beyond NumPy and Pillow ("Needs X." in its
            docstring), "" for nothing.
    """

    number: int
    path: Path
    title: str
    writes: tuple[str, ...]
    needs: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def tour_dir() -> Path:
    """The folder holding the tour scripts (see the module docstring)."""
    places = []
    if os.environ.get(TOUR_ENV):
        places.append(Path(os.environ[TOUR_ENV]))
    places.append(REPOSITORY_TOUR)
    for place in places:
        if place.is_dir() and any(_NAME.match(p.name) for p in place.iterdir()):
            return place
    raise DataError(
        f"the tour scripts were not found (looked in {', '.join(map(str, places))}); they ship with the "
        f"source repository's examples/tour/: clone it and run `pip install -e .` there, or set {TOUR_ENV} "
        "to a folder holding them"
    )


def _describe(path: Path, number: int) -> Step:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise DataError(f"tour script {str(path)!r} cannot be read: {exc}") from None
    lines = doc.strip().splitlines()
    title = _TITLE.sub("", lines[0]).strip().rstrip(".") if lines else path.stem
    title = title[:1].upper() + title[1:]
    promise = re.search(r"\bWrites\b(.*?)(?:\n\s*\n|$)", doc, re.S)  # to the end of its paragraph
    writes = tuple(re.findall(r"[\w\-]+\.png", promise.group(1))) if promise else ()
    need = re.search(r"\bNeeds\s+(.+?)[.;](?:\s|$)", doc, re.S)
    needs = " ".join(need.group(1).split()) if need else ""
    return Step(number, path, title, writes, needs)


def steps(folder=None) -> list[Step]:
    """Every step of the tour, in order."""
    folder = Path(folder) if folder is not None else tour_dir()
    if not folder.is_dir():
        raise DataError(f"tour folder {str(folder)!r} does not exist")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))
    return [_describe(path, number) for number, path in found]


def step(number, folder=None) -> Step:
    """Step ``number`` (an int or a string of digits); a DataError names the valid ones."""
    all_steps = steps(folder)
    known = ", ".join(str(s.number) for s in all_steps)
    try:
        n = int(number)
    except (TypeError, ValueError):
        raise DataError(f"tour step must be a number ({known}), got {number!r}") from None
    for s in all_steps:
        if s.number == n:
            return s
    raise DataError(f"there is no tour step {n}; the steps are {known}")


def run(number, out=None, folder=None, capture: bool = False) -> subprocess.CompletedProcess:
    """Run step ``number`` as its own Python process with ``out`` (default: the
    current directory, created if needed) as its working directory, so its
    PNGs land there. Returns the finished process; its ``returncode`` is 0
    when every claim of the script held.
    """
    s = step(number, folder)
    out = Path(out) if out is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this tinyconv
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(s.path)], cwd=out, env=env, capture_output=capture, text=True, check=False
    )


__all__ = ["REPOSITORY_TOUR", "Step", "TOUR_ENV", "run", "step", "steps", "tour_dir"]
