"""The cookbook notebooks as a person meets them: JupyterLab on 127.0.0.1 in Debian's Chromium, driven by Playwright.

papermill and nbval run notebooks without a frontend; this opens them in the browser, clicks Run All and uses the
form the way a person does (typing into fields, clicking buttons), then reads the job file notebook 03 trains.
JupyterLab gets a random port and token and private config, settings, workspace and runtime folders; the notebooks
are copies in a temporary folder (01 and 02 without outputs, and 02 with ``measure_estimate = False`` so Run All
takes seconds: the form's Estimate button times real steps instead), so nothing in the checkout changes. A failing
test leaves a screenshot in ``out/browser/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from ftkit.cookbook.defaults import JOB_DEFAULTS
from ftkit.cookbook.steps import paths as cookbook_paths

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "out" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_LIMIT_MS = 300_000  # Run All of a notebook, on a busy 2-core CPU

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="make setup installs playwright (the dev extra)")


class Lab:
    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen):
        self.root, self.port, self.token, self.proc = root, port, token, proc

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/notebooks/{notebook}.ipynb?reset&token={self.token}"

    @property
    def run_dir(self) -> Path:
        return self.root / "out" / "cookbook"  # the notebooks' default run_dir, "../out/cookbook"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium package")
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    (root / "notebooks").mkdir(parents=True)
    for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(src, as_version=4)
        if src.name[:2] in ("01", "02"):  # run here; 05 keeps its committed outputs, as a reader opens it
            nb.metadata.pop("widgets", None)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
                if "parameters" in cell.metadata.get("tags", []):  # as papermill -p would; the form times steps
                    cell.source, n = re.subn(r"(?m)^measure_estimate = \w+", "measure_estimate = False", cell.source)
                    assert n == (src.name[:2] == "02"), "notebook 02 declares measure_estimate"
        nbformat.write(nb, root / "notebooks" / src.name)
    (root / "notebooks" / "02_committed.ipynb").write_bytes(
        (ROOT / "notebooks" / "02_configure_job.ipynb").read_bytes()
    )
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "sessionDialogs.jupyterlab-settings").write_text(json.dumps({"autoStartDefault": True}))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    log = open(tmp / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 2 minutes")
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited: {(tmp / 'jupyterlab.log').read_text()[-2000:]}")
        yield Lab(root, port, token, proc)
    finally:
        try:  # shut the kernels down through the server, then the server
            url = f"http://127.0.0.1:{port}/api/kernels?token={token}"
            for k in json.load(urllib.request.urlopen(url, timeout=5)):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/kernels/{k['id']}?token={token}", method="DELETE"
                )
                urllib.request.urlopen(req, timeout=10)
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A page that records console errors; a failing test leaves out/browser/<test>.png."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1800})
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    pg.close()


# --- driving JupyterLab ---
CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def open_notebook(pg, lab: Lab, name: str) -> None:
    pg.goto(lab.url(name))
    pg.wait_for_selector(f"{CURRENT} .jp-Notebook", timeout=90_000)
    select = pg.locator(".jp-Dialog button:has-text('Select')")
    for _ in range(10):  # JupyterLab may still ask which kernel to start; the notebooks name python3
        if select.count():
            select.first.click()
            break
        pg.wait_for_timeout(300)
    pg.wait_for_selector(f"{CURRENT} .jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")


def run_all(pg, lab: Lab, name: str) -> None:
    """Open a notebook, Run All from the menu, wait until every code cell has run (or one failed)."""
    open_notebook(pg, lab, name)
    pg.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    pg.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    pg.wait_for_function(
        """sel => [...document.querySelectorAll(sel + ' .jp-CodeCell .jp-InputPrompt')]
                     .every(e => /\\d/.test(e.textContent))
                 || document.querySelector(sel).textContent.includes('Traceback (most recent call last)')""",
        arg=CURRENT,
        timeout=RUN_LIMIT_MS,
    )
    prompts = pg.locator(f"{CURRENT} .jp-CodeCell .jp-InputPrompt").all_text_contents()
    errors = pg.locator(f"{CURRENT} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert all(any(ch.isdigit() for ch in p) for p in prompts), f"{name} stopped: {errors.all_text_contents()}"


def stderr_outputs(pg) -> list[str]:
    return pg.locator(
        f"{CURRENT} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    ).all_text_contents()


def field(pg, label: str):
    """The widget whose description is ``label`` (a text box, a slider, a dropdown, ...)."""
    return pg.locator(f"{CURRENT} .widget-inline-hbox:has(> label.widget-label:text-is('{label}'))").first


def type_into(pg, label: str, text: str) -> None:
    """Type a value as a person does: into the text box, or into a slider's editable readout."""
    w = field(pg, label)
    w.scroll_into_view_if_needed()
    box = w.locator("input, .widget-readout").first
    box.click()
    box.press("Control+a")
    box.type(text)
    box.press("Enter")
    pg.wait_for_timeout(300)


def click_button(pg, text: str) -> None:
    pg.locator(f"{CURRENT} button.jupyter-button:has-text('{text}')").first.click()


def saved_file(pg, lab: Lab) -> Path:
    """The file the form says it saved (its status line 'saved to <path>')."""
    status = pg.locator(f"{CURRENT} .widget-html:has-text('saved to')").last
    status.wait_for(timeout=30_000)
    text = status.inner_text().split("saved to", 1)[1].strip().split()[0]
    path = Path(text).expanduser()
    return path if path.is_absolute() else (lab.root / "notebooks" / path)


def no_console_errors(pg) -> None:
    assert pg.errors == [], f"browser console errors: {pg.errors}"


# --- the notebooks ---
def test_notebook_01_runs_in_jupyterlab_and_shows_its_figure_and_tables(page, lab):
    run_all(page, lab, "01_prepare_pubmedqa")
    out = page.locator(f"{CURRENT} .jp-OutputArea-output")
    assert out.locator("img").count() >= 1  # the token-length histogram
    assert out.locator("table").count() >= 3  # the split, the dataset checks, the first rows
    assert stderr_outputs(page) == []
    assert "Traceback" not in page.locator(CURRENT).inner_text()
    no_console_errors(page)


def test_notebook_02_form_edits_reach_the_job_notebook_03_trains_with_exact_values(page, lab):
    if not (lab.run_dir / "data" / "pubmedqa" / "train.csv").is_file():
        run_all(page, lab, "01_prepare_pubmedqa")
    run_all(page, lab, "02_configure_job")
    job_file = cookbook_paths(lab.run_dir).job_file  # what notebook 03 runs: ftkit.run_job(paths.job_file)
    form = page.locator(f"{CURRENT} .widget-vbox:has(label.widget-label:text-is('learning_rate'))").first
    form.wait_for(timeout=60_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    form.screenshot(path=str(SHOTS / "form.png"))  # a CI artefact: the form as a person sees it
    assert "VBox(children" not in page.locator(CURRENT).inner_text()
    assert stderr_outputs(page) == []

    # untouched, the form saves the parameters' job, to the file notebook 03 trains
    click_button(page, "Save job")
    saved = saved_file(page, lab)
    body = json.loads(saved.read_text())
    got = {"saved to": saved.resolve(), "learning_rate": body["hyperparameters"]["learning_rate"]}
    assert got == {"saved to": job_file.resolve(), "learning_rate": JOB_DEFAULTS["learning_rate"]}

    # typed values are saved values, exactly
    epochs, r = JOB_DEFAULTS["n_epochs"] + 1, 16 if JOB_DEFAULTS["lora_r"] != 16 else 32
    type_into(page, "name", "edited-in-browser")
    type_into(page, "n_epochs", str(epochs))
    type_into(page, "learning_rate", "2e-4")
    type_into(page, "r", str(r))
    type_into(page, "warmup_ratio", "0.25")
    page.locator(f"{CURRENT} .widget-html:has-text('valid job')").first.wait_for(timeout=10_000)
    click_button(page, "Save job")
    page.wait_for_timeout(1000)
    hp = json.loads(job_file.read_text())
    assert (hp["name"], hp["hyperparameters"]["n_epochs"], hp["hyperparameters"]["lora"]["r"]) == (
        "edited-in-browser",
        epochs,
        r,
    )
    assert hp["hyperparameters"]["learning_rate"] == 0.0002 and hp["hyperparameters"]["warmup_ratio"] == 0.25
    assert hp["local"]["max_seq_length"] == JOB_DEFAULTS["max_seq_length"]

    # re-running the notebook's last cell keeps the form's job instead of overwriting it with the parameters
    last = page.locator(f"{CURRENT} .jp-CodeCell").last
    last.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")  # run this cell, stay on it
    last.locator(".jp-OutputArea:has-text('saved by the form')").wait_for(timeout=60_000)
    assert json.loads(job_file.read_text()) == hp

    # an out-of-range value: its message beside the field, and Save refuses
    type_into(page, "weight_decay", "-1")
    row = page.locator(f"{CURRENT} .ftkit-field:has(label.widget-label:text-is('weight_decay'))")
    assert "is too small" in row.inner_text()
    row.screenshot(path=str(SHOTS / "form-problem.png"))
    click_button(page, "Save job")
    page.locator(f"{CURRENT} .widget-html:has-text('not saved')").first.wait_for(timeout=10_000)
    assert json.loads(job_file.read_text()) == hp
    type_into(page, "weight_decay", "0")

    # the estimate runs beside the kernel: progress, a stop button, then a result
    click_button(page, "Estimate")
    page.locator(f"{CURRENT} .ftkit-estimate [class*='progress']").first.wait_for(timeout=30_000)
    # the kernel is free again while the estimate still runs (it only handles the widgets' messages)
    page.wait_for_selector(f"{CURRENT} .jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")
    assert page.locator(f"{CURRENT} .ftkit-estimate [class*='progress']").first.is_visible()
    click_button(page, "Stop")
    page.locator(f"{CURRENT} .ftkit-estimate:has-text('cancelled')").wait_for(timeout=120_000)
    page.locator(f"{CURRENT} .widget-checkbox:has-text('time training steps') input").uncheck()
    click_button(page, "Estimate")
    page.locator(f"{CURRENT} .ftkit-estimate:has-text('priced tokens')").wait_for(timeout=120_000)
    no_console_errors(page)


def test_notebook_02_shows_its_committed_form_before_it_runs(page, lab):
    open_notebook(page, lab, "02_committed")
    form = page.locator(f"{CURRENT} .jp-OutputArea-output:has-text('learning_rate')")
    form.first.wait_for(timeout=30_000)
    assert "VBox(children" not in page.locator(CURRENT).inner_text()
    no_console_errors(page)


def test_notebook_05_opens_with_its_figures_and_tables(page, lab):
    open_notebook(page, lab, "05_export_and_evaluate")
    out = page.locator(f"{CURRENT} .jp-OutputArea-output")
    out.locator("img").first.wait_for(timeout=30_000)
    assert out.locator("img").count() >= 1  # the confusion matrix
    assert out.locator("table").count() >= 2  # base vs tuned, the answers
    assert stderr_outputs(page) == []
    no_console_errors(page)
