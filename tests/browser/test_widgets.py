"""The notebooks in a real browser: headless Chromium (the system package, driven by playwright) opens JupyterLab,
runs each notebook that builds widgets at its default (interactive) parameters, moves the widget's dropdown and
slider, and checks that the widget's output area changes each time; and runs notebook 04's first section (the
methods in steps) as a learner would. Screenshots and timings go to runs/browser/.

Off by default: runs only with REPRO_BROWSER=1 and a Chromium at $CHROMIUM (default /usr/bin/chromium).
Run as: make test-browser   (installs Debian's chromium if missing)
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.browser.lab import Lab, prepare_root, run_stages

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "runs" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CELL_TIMEOUT_MS = 600_000  # a whole notebook at its defaults (03 loads a model and samples) on a busy 2-core machine
REACT_TIMEOUT_MS = 60_000  # one widget redraw

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("REPRO_BROWSER") != "1", reason="browser test: set REPRO_BROWSER=1"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"browser test: no Chromium at {CHROMIUM}"),
]


def widget_notebooks() -> list[str]:
    """Stems of the notebooks with a code cell that uses repro.widgets."""
    stems = []
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        if any(c["cell_type"] == "code" and "widgets." in "".join(c["source"]) for c in cells):
            stems.append(nb.stem)
    return stems


NOTEBOOKS = widget_notebooks()
TIMINGS: dict[str, float] = {}


def earlier_stages(stem: str) -> list[str]:
    """A notebook reads the artifacts of every stage before it (runner.cache_keys chains them the same way)."""
    return [p.stem[:2] for p in sorted((REPO / "notebooks").glob("*.ipynb")) if p.stem[:2] < stem[:2]]


@pytest.fixture(scope="module")
def lab():
    """Smoke artifacts of the stages the widget notebooks need, then one JupyterLab for all of them."""
    root = prepare_root(REPO, OUT / "root")
    needed = sorted({s for stem in NOTEBOOKS for s in earlier_stages(stem)})
    if needed:
        TIMINGS["smoke prerequisites " + " ".join(needed)] = run_stages(root, *needed)
    t0 = time.time()
    with Lab(root, OUT / "jupyter-lab.log") as server:
        TIMINGS["lab start"] = time.time() - t0
        yield server
    (OUT / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}, indent=1))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser test: pip install playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        # the system Chromium: `playwright install` would download its own build, which this machine cannot
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _errors(page) -> str:
    """Text of the error outputs on the page (for a failure message)."""
    texts = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return "\n".join(t for t in texts if "Error" in t)[-3000:]


def _run_all(page, item: str = "Run All Cells") -> None:
    """Run > Run All Cells (or another item of the Run menu), as a learner would (the widget cell needs what the
    cells above it computed). Waits until the status bar shows the kernel idle: before its session exists, Lab
    answers Run All with a kernel dialog."""
    page.locator("#jp-main-statusbar", has_text=re.compile(r"\(repro\) \| Idle")).wait_for(timeout=180_000)
    for _ in range(2):
        page.locator(".lm-MenuBar-item", has=page.get_by_text("Run", exact=True)).click()
        page.locator(".lm-Menu-item", has=page.get_by_text(item, exact=True)).click()
        try:  # a queued or finished cell shows [*] or [n]
            page.locator(".jp-InputArea-prompt", has_text=re.compile(r"\[[*\d]+\]")).first.wait_for(timeout=30_000)
            return
        except Exception:
            dialogs = page.locator(".jp-Dialog").all_inner_texts()
            if not any("Select Kernel" in d for d in dialogs):
                raise
            # the session was still settling: accept the preferred kernel (the suite's), as a learner would
            page.locator(".jp-Dialog").get_by_role("button", name="Select").click()
    raise AssertionError(f"Run > Run All Cells started nothing; dialogs on the page: {dialogs}")


def _wait_changed(page, output, before: str, what: str) -> str:
    """Wait until the widget's output area differs from `before` and has finished drawing (an image is back)."""
    deadline = time.time() + REACT_TIMEOUT_MS / 1000
    while time.time() < deadline:
        now = output.inner_html()
        if now != before and output.locator("img").count() > 0:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"{what}: the widget's output area did not change within {REACT_TIMEOUT_MS / 1000:.0f} s")


def _open(browser, stem: str):
    """A new page for the notebook (a stale failure shot of it removed)."""
    (OUT / f"{stem}-failed.png").unlink(missing_ok=True)
    return browser.new_page(viewport={"width": 1400, "height": 1000})


def _shot(page, name: str) -> None:
    """runs/browser/<name>.png of the page as it is."""
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"))


def _load(page, lab, stem: str) -> None:
    """The notebook open in JupyterLab, its first code cell rendered (inside the caller's try: a failure is shot)."""
    page.goto(lab.notebook_url(stem))
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_widget_reacts_in_jupyterlab(browser, lab, stem):  # browser first: skip before any smoke run
    t0 = time.time()
    page = _open(browser, stem)
    try:
        _load(page, lab, stem)
        _run_all(page)

        cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=re.compile(r"widgets\.\w+\("))
        output = cell.locator(".widget-output").first
        try:
            output.locator("img").first.wait_for(timeout=CELL_TIMEOUT_MS)
        except Exception as e:
            dialogs = page.locator(".jp-Dialog").all_inner_texts()
            raise AssertionError(f"{stem}: the widget did not draw; dialogs {dialogs}, errors:\n{_errors(page)}") from e
        TIMINGS[f"{stem} run all until widget"] = time.time() - t0

        before = output.inner_html()
        dropdown = cell.locator(".widget-dropdown select").first
        options = dropdown.locator("option").all_inner_texts()
        assert len(options) > 1, f"{stem}: the first dropdown offers {options}"
        dropdown.select_option(index=1)
        before = _wait_changed(page, output, before, f"{stem}: dropdown -> {options[1]!r}")

        # the slider: focus its handle and step it with the keyboard (noUiSlider's own key handling)
        cell.locator(".widget-slider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        _wait_changed(page, output, before, f"{stem}: slider one step right")
        assert cell.locator(".widget-readout").first.inner_text().strip() == "1"

        cell.scroll_into_view_if_needed()
        _shot(page, stem)
        TIMINGS[f"{stem} total"] = time.time() - t0
    except BaseException:
        _shot(page, f"{stem}-failed")  # what the page showed when it went wrong
        raise
    finally:
        page.close()
        lab.shutdown_kernels()



def test_04_first_section_runs_in_jupyterlab(browser, lab):
    """04 as a learner opens it: select the cell that ends section 1 (UMed's rewards and PPO in steps, on hand
    batches), Run > Run All Above Selected Cell, then that cell; the hand batch's tables and PPO's five steps must
    be on the page and no cell may fail. Section 1 needs no earlier stage's artefacts."""
    stem = "04_rl"
    t0 = time.time()
    page = _open(browser, stem)
    try:
        _load(page, lab, stem)
        end = page.locator(".jp-Notebook .jp-CodeCell").filter(
            has=page.locator(".cm-content", has_text=re.compile(r"^umed_cfg$")))
        end.locator(".jp-InputArea-prompt").first.click()  # select the cell (command mode), as a mouse click does
        _run_all(page, "Run All Above Selected Cell")
        page.locator("#jp-main-statusbar", has_text=re.compile(r"\(repro\) \| Idle")).wait_for(timeout=CELL_TIMEOUT_MS)
        end.locator(".jp-InputArea-prompt").first.click()
        page.keyboard.press("Shift+Enter")
        end.locator(".jp-OutputArea-output", has_text="UMedConfig(").wait_for(timeout=REACT_TIMEOUT_MS)
        notebook = page.locator(".jp-Notebook")
        for text in ("mean: / n_terms", "centred (step 1)", "clipped loss (step 5)"):
            assert notebook.get_by_text(text).count() > 0, f"{stem}: no {text!r} on the page; errors:\n{_errors(page)}"
        assert not _errors(page), _errors(page)
        end.scroll_into_view_if_needed()
        _shot(page, stem)
        TIMINGS[f"{stem} first section"] = time.time() - t0
    except BaseException:
        _shot(page, f"{stem}-failed")
        raise
    finally:
        page.close()
        lab.shutdown_kernels()
