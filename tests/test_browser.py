"""The learner's path in a real browser: JupyterLab on localhost, notebooks 01 and 04 run in headless Chromium.

nbmake proves the notebooks execute; this proves what a learner *sees*: no error or warning boxes, a reward
explorer that is a live widget (its logit changes sign between a positive and a negative review typed into
it), and a clip explorer whose slider redraws one plot without printing a raw repr.

Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it) and the `playwright` Python
package from the dev extra. Never `playwright install`: it downloads browsers. Set RLHF_CHROMIUM to use a
Chromium elsewhere. Cell output is read with `textContent`, because JupyterLab skips rendering off-screen cells.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # JupyterLab runs notebooks 01 and 04, which load the smoke world

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run"]
RUN_TIMEOUT_S = 420  # per notebook; the smoke profile runs 01 and 04 in about 15 s each once the world is cached


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free localhost port, serving copies of the notebooks (the repo's stay untouched)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"No Chromium at {CHROMIUM}. Install Debian's package (`apt-get install chromium`, as .ci/run "
                    f"does) or point RLHF_CHROMIUM at a Chromium binary. Do not run `playwright install`.")
    folder = tmp_path_factory.mktemp("lab")
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(path, folder / path.name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # a learner's kernel draws inline
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--LabApp.news_url=",
               f"--LabApp.workspaces_dir={folder / 'workspaces'}", f"--LabApp.user_settings_dir={folder / 'settings'}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = open(folder / "lab.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start:\n{(folder / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    try:
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _open_and_run_all(browser, lab, name: str):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset")  # reset: open only this notebook, restore no layout
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=90_000)
    start = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Done when every code cell shows an execution count "[n]:" (queued or running cells show "[*]:"), or when a
    # cell failed: Run All stops there and leaves the rest unnumbered.
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
            const failed = document.querySelector(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
            const busy = prompts.some(t => t.includes('*'));
            return prompts.length > 0 && (prompts.every(t => /\\[\\d+\\]/.test(t)) || (failed && !busy));
        }""", timeout=RUN_TIMEOUT_S * 1000, polling=1000)
    return page, time.monotonic() - start


def _stderr_outputs(page) -> list[str]:
    """Text of every red box: errors, tracebacks and anything written to stderr (warnings, progress bars)."""
    return page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', "els => els.map(e => e.textContent)")


def _logit(page) -> float:
    text = page.locator(".widget-html-content", has_text="POSITIVE logit").first.text_content()
    return float(re.search(r"POSITIVE logit:\s*([+-][\d.]+)", text).group(1))


def _assert_no_raw_repr(widget) -> None:
    text = widget.text_content()
    assert "array(" not in text and "Axes" not in text, f"a raw repr is printed under the slider: {text[:200]}"


def test_notebook_01_in_a_browser(browser, lab):
    page, seconds = _open_and_run_all(browser, lab, "01_imdb_and_reward.ipynb")
    print(f"notebook 01 ran in the browser in {seconds:.0f} s")
    assert _stderr_outputs(page) == []

    # The reward explorer is a live widget: typing a review re-scores it in the kernel.
    box = page.locator(".widget-textarea textarea").first
    box.wait_for(timeout=30_000)
    scores = {}
    for label, review in [("positive", "This movie was wonderful, I loved every minute of it. A brilliant, "
                                       "moving film with great acting."),
                          ("negative", "This movie was terrible and boring. Awful acting, a waste of time, the "
                                       "worst film I have seen.")]:
        before = page.locator(".widget-html-content", has_text="POSITIVE logit").first.text_content()
        box.fill(review)
        page.wait_for_function(
            """before => [...document.querySelectorAll('.widget-html-content')]
                          .some(e => e.textContent.includes('POSITIVE logit') && e.textContent !== before)""",
            arg=before, timeout=30_000)
        scores[label] = _logit(page)
    assert scores["positive"] > 0 > scores["negative"], scores
    assert _stderr_outputs(page) == []
    page.close()


def test_notebook_04_in_a_browser(browser, lab):
    page, seconds = _open_and_run_all(browser, lab, "04_clipped_ppo_objective.ipynb")
    print(f"notebook 04 ran in the browser in {seconds:.0f} s")
    assert _stderr_outputs(page) == []

    interact = page.locator(".widget-interact").first
    interact.wait_for(timeout=30_000)
    images = interact.locator("img")
    assert images.count() == 1, "the clip explorer should show exactly one figure"
    first_src = images.first.get_attribute("src")
    _assert_no_raw_repr(interact)

    handle = interact.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    page.wait_for_function(
        """src => { const img = document.querySelector('.widget-interact img');
                    return img && img.getAttribute('src') !== src; }""", arg=first_src, timeout=30_000)
    assert interact.locator("img").count() == 1, "moving the slider must replace the figure, not add one"
    _assert_no_raw_repr(interact)
    assert interact.locator(".widget-readout").first.text_content().strip() == "0.30"  # 0.2 + two steps of 0.05
    assert _stderr_outputs(page) == []
    page.close()
