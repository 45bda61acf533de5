"""The backprop tour: tinyconv/tools/tour.py, ``tinyconv tour`` and every script of examples/tour/.

Each script runs as its own process in a temporary folder and must exit 0:
its printed claims are asserted inside the script, so a claim that stops
holding fails here. It must also write the PNGs its docstring promises.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tinyconv.cli import main
from tinyconv.errors import DataError
from tinyconv.tools import tour

TOUR = Path(__file__).resolve().parents[1] / "examples" / "tour"  # the tests ship with the tour
STEPS = tour.steps(TOUR)


@pytest.fixture(autouse=True)
def _repository_tour(monkeypatch):
    """Every test sees this checkout's tour, whatever $TINYCONV_TOUR says outside."""
    monkeypatch.delenv(tour.TOUR_ENV, raising=False)
    monkeypatch.setattr(tour, "REPOSITORY_TOUR", TOUR)


def _needs_localize(step) -> bool:
    return "localize" in step.path.read_text(encoding="utf-8")


def test_the_tour_has_eight_numbered_short_documented_steps():
    assert [s.number for s in STEPS] == list(range(1, 9))
    for s in STEPS:
        source = s.path.read_text(encoding="utf-8")
        assert source.startswith(f'"""Step {s.number}: '), f"{s.name}: docstring must open 'Step N: title'"
        assert len(source.splitlines()) <= 90, f"{s.name} is too long for a tour step"
    promised = {name for s in STEPS for name in s.writes}
    assert promised >= {"relu_rules.png", "saliency.png", "class_model_scores.png", "localisation.png"}


@pytest.mark.parametrize("step", STEPS, ids=[s.path.stem for s in STEPS])
def test_step_runs_its_claims_hold_and_its_pictures_are_written(step, tmp_path):
    if _needs_localize(step) and not all(importlib.util.find_spec(m) for m in ("maxflow", "scipy")):
        pytest.skip("needs PyMaxflow and scipy (pip install 'tinyconv[localize]')")
    done = tour.run(step.number, tmp_path, folder=TOUR, capture=True)
    assert done.returncode == 0, f"{step.name} failed:\n{done.stdout}\n{done.stderr}"
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("OK") or "skipped" in last, last
    for name in step.writes:
        if "skipped" in last:
            break
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and min(im.size) >= 28, name


def test_gpu_step_runs_on_a_stand_in_device(tmp_path):
    """Step 8's GPU branch, with the tests' CuPy-like fake device registered as "cuda"."""
    script = tour.step(8, TOUR).path
    bootstrap = textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fake_device import FakeArray, fake_module
        from tinyconv.engine.backend import register_backend
        register_backend("cuda", FakeArray, fake_module)
        runpy.run_path({str(script)!r}, run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", bootstrap], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 'cuda'" in done.stdout and done.stdout.strip().endswith("changed")


def test_cli_lists_every_step(capsys):
    assert main(["tour"]) == 0
    out = capsys.readouterr().out
    for s in STEPS:
        assert f"{s.number}. {s.title}" in out and s.name in out


def test_cli_runs_one_step_into_a_folder(tmp_path, capsys):
    assert main(["tour", "4", "-o", str(tmp_path / "pictures")]) == 0
    assert (tmp_path / "pictures" / "relu_rules.png").is_file()
    assert "step 4: ok" in capsys.readouterr().out


def test_cli_prints_a_script(capsys):
    assert main(["tour", "2", "--source"]) == 0
    assert capsys.readouterr().out == STEPS[1].path.read_text(encoding="utf-8")


@pytest.mark.parametrize("bad", ["99", "0", "two"])
def test_cli_names_the_valid_steps_for_a_bad_one(bad, capsys):
    assert main(["tour", bad]) == 2
    err = capsys.readouterr().err
    assert "1, 2, 3, 4, 5, 6, 7, 8" in err and bad in err


@pytest.fixture
def own_tour(tmp_path, monkeypatch):
    """A two-step tour in a folder of its own, found through $TINYCONV_TOUR."""
    folder = tmp_path / "tour"
    folder.mkdir()
    (folder / "01_draw.py").write_text(
        '"""Step 1: Draw two pictures.\n\nWrites a.png\nand b-2.png.\n"""\n'
        "from PIL import Image\n"
        "for name in ('a.png', 'b-2.png'):\n"
        "    Image.new('L', (28, 28)).save(name)\n"
        "print('OK')\n"
    )
    claim = '"""Step 2: a claim that does not hold."""\nassert 1 == 3, "arithmetic"\n'
    (folder / "02_fails.py").write_text(claim)
    (folder / "notes.txt").write_text("not a step")
    monkeypatch.setenv(tour.TOUR_ENV, str(folder))
    return folder


def test_steps_come_from_the_environment_folder_with_their_promises(own_tour, tmp_path):
    first, second = tour.steps()
    assert (first.number, first.title, first.writes) == (1, "Draw two pictures", ("a.png", "b-2.png"))
    assert (second.number, second.title, second.writes) == (2, "A claim that does not hold", ())
    assert tour.run(1, tmp_path / "out").returncode == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.png", "b-2.png"}


def test_a_failing_claim_fails_the_step_and_the_command(own_tour, tmp_path, capsys):
    done = tour.run(2, tmp_path, capture=True)
    assert done.returncode != 0 and "AssertionError: arithmetic" in done.stderr
    assert main(["tour", "all", "-o", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "step 2: FAILED" in out and "step 1: ok" in out


def test_a_missing_tour_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tour, "REPOSITORY_TOUR", tmp_path / "examples" / "tour")
    with pytest.raises(DataError, match=r"examples/tour.*pip install -e \.") as info:
        tour.steps()
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        tour.steps(tmp_path / "nowhere")
