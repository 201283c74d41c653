"""Bad input and faults, tried as a new user would (issue #13): each case asserts the exit code, the message, that no
traceback was printed and that nothing was left half-written.

Most cases run the real command in a fresh process (``leaks.ftkit``), so that what reaches the terminal is what is
checked: warnings printed at exit, a kernel's stderr, a closed pipe.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from leaks import PLANTED_TOKEN, ftkit, places_holding

from ftkit.cli import main
from ftkit.job import store as jobstore
from ftkit.train.engine import train
from ftkit.train.estimate import estimate


def write_rows(path: Path, rows: list[tuple[str, str]], header=("prompt", "answer")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def even_rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"Question {i}: is {i} even?", "yes" if i % 2 == 0 else "no") for i in range(start, start + n)]


def job_body(folder: Path, model: Path, name: str = "tiny", n_train: int = 12, **hp) -> dict:
    """A job on the tiny model over ``n_train`` rows (batch 4) and 4 validation rows, in ``folder``."""
    write_rows(folder / "data" / "train.csv", even_rows(n_train))
    write_rows(folder / "data" / "validation.csv", even_rows(4, start=1000))
    local = hp.pop("local", {})
    return {
        "name": name,
        "base_model_id": str(model),
        "dataset": {"id": str(folder / "data"), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"batch_size": 4, "learning_rate": 1e-3, "lora": {"r": 4, "alpha": 8}, **hp},
        "local": {"output_dir": str(folder / "runs"), "seed": 1, **local},
    }


def no_traceback(*texts: str) -> bool:
    return not any("Traceback" in t for t in texts)


@pytest.fixture(scope="module")
def done_job(tmp_path_factory, tiny_model_dir) -> jobstore.Job:
    """A completed two-step job on the tiny model."""
    folder = tmp_path_factory.mktemp("done-job")
    return train(job_body(folder, tiny_model_dir, name="done", n_evals=1, local={"max_steps": 2}), quiet=True)


# --- 1. secrets ---------------------------------------------------------------------------------------------------


class _Rejects(BaseHTTPRequestHandler):
    """A Hub that answers 401 to everything (the token is wrong)."""

    def _answer(self):
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Invalid credentials in Authorization header"}')

    do_GET = do_HEAD = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


def test_a_planted_token_is_in_no_output_and_no_file_whichever_way_it_was_given(tmp_path, done_job):
    work, given = tmp_path / "work", tmp_path / "given"
    shutil.copytree(done_job.path, work / "runs" / "done")
    given.mkdir()
    (given / "eval.json").write_text(json.dumps({"accuracy": 0.5, "hf_token": PLANTED_TOKEN, "note": PLANTED_TOKEN}))
    hub = ThreadingHTTPServer(("127.0.0.1", 0), _Rejects)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    rejecting = f"http://127.0.0.1:{hub.server_address[1]}"
    base = {"FTKIT_JOBS_DIR": str(work / "runs"), "HF_HOME": str(work / "hf"), "FTKIT_CACHE": str(work / "cache")}
    push = ["push", "done", "--repo-id", "me/model"]
    cases = [  # (argv, extra environment, exit code, message)
        ([*push, "--token", PLANTED_TOKEN], {}, 2, "--token is not accepted"),
        ([*push, f"--token={PLANTED_TOKEN}"], {}, 2, "--token is not accepted"),
        ([*push, "--tok", PLANTED_TOKEN], {}, 2, "unrecognized arguments: --tok ***"),
        ([*push, "--token-env", PLANTED_TOKEN], {}, 1, "--token-env takes the NAME of a variable"),
        (["--debug", *push, "--token-env", PLANTED_TOKEN], {}, 1, "--token-env takes the NAME of a variable"),
        (push, {"HF_TOKEN": PLANTED_TOKEN, "HF_ENDPOINT": "http://127.0.0.1:9"}, 1, "could not reach the Hugging"),
        (push, {"HF_TOKEN": PLANTED_TOKEN, "HF_ENDPOINT": rejecting}, 1, "rejected the token (401"),
        (["export", "done", "--out", "done.tar.gz", "--evaluation", str(given / "eval.json")], {}, 0, "wrote"),
        (["push", "done.tar.gz", "--repo-id", "me/m"], {"HF_TOKEN": PLANTED_TOKEN, "HF_ENDPOINT": rejecting}, 1, "401"),
        (["export", "done", "--tok", PLANTED_TOKEN], {}, 2, "unrecognized arguments: --tok ***"),
    ]
    outputs = {}
    try:
        for i, (argv, env, code, message) in enumerate(cases):
            proc = ftkit(argv, cwd=work, env={**base, **env}, timeout=120)
            outputs[f"{i}: {argv[:2]} stdout"], outputs[f"{i}: {argv[:2]} stderr"] = proc.stdout, proc.stderr
            assert proc.returncode == code, (argv, proc.stderr)
            assert message in proc.stdout + proc.stderr, (argv, proc.stderr)
            assert "--debug" in argv or no_traceback(proc.stdout, proc.stderr), proc.stderr
    finally:
        hub.shutdown()
    assert "HF_TOKEN" in outputs["0: ['push', 'done'] stderr"]  # says how to pass a token instead
    assert (work / "done.tar.gz").is_file()
    assert places_holding(PLANTED_TOKEN, outputs, [work]) == []


# --- 2. a bad job file, before torch loads ------------------------------------------------------------------------

_BODY = {"name": "x", "base_model_id": "bundled", "dataset": {"id": "t.csv", "answer_column": "answer"}}
BAD_JOB_FILES = {  # file -> (content; None: absent, "/": a folder; message)
    "unknown-key.json": (json.dumps({**_BODY, "bogus": 1}), "bogus: unknown field"),
    "wrong-type.json": (json.dumps({**_BODY, "hyperparameters": {"n_epochs": "many"}}), "must be a whole number"),
    "bad-value.json": (json.dumps({**_BODY, "hyperparameters": {"n_epochs": 0}}), "is too small (got 0"),
    "missing.json": (None, "job file not found"),
    "empty.json": ("", "(file): is empty"),
    "empty.yaml": ("\n", "(file): is empty"),
    "broken.json": ("{bad", "invalid JSON at line 1, column 2"),
    "broken.yaml": ("a: [\n", "invalid YAML"),
    "folder.json": ("/", "is a folder, not a job file"),
    "binary.json": (b"\xff\xfe\x00\x01", "is not UTF-8 text (byte 0xff at offset 0)"),
}

_RUN_EACH = """
import contextlib, io, json, sys
from ftkit.cli import main
out = {}
for verb in ("train", "check-job"):
    for name in sys.argv[1:]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([verb, name])
        out[f"{verb} {name}"] = [code, err.getvalue()]
out["torch loaded"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_a_bad_job_file_is_reported_by_train_and_check_job_without_loading_torch(tmp_path):
    write_rows(tmp_path / "t.csv", even_rows(4))
    for name, (content, _) in BAD_JOB_FILES.items():
        if content == "/":
            (tmp_path / name).mkdir()
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            (tmp_path / name).write_text(content)
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_EACH, *BAD_JOB_FILES], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for verb in ("train", "check-job"):
        for name, (_, message) in BAD_JOB_FILES.items():
            code, err = got[f"{verb} {name}"]
            assert code == 1 and err.startswith("ftkit: ") and name in err.splitlines()[0], (verb, name, err)
            assert message in err and no_traceback(err), (verb, name, err)
    assert got["torch loaded"] is False  # every one was answered before the training engine loaded
    assert not (tmp_path / "runs").exists()


# --- 3. the data checks of `validate`, in check-job and train -----------------------------------------------------


def test_train_refuses_data_that_validate_rejects_before_making_a_job_folder(tmp_path, tiny_model_dir):
    body = job_body(tmp_path, tiny_model_dir)
    write_rows(tmp_path / "data" / "train.csv", [*even_rows(6), ("Is it?", ""), ("", "yes"), *even_rows(2)])
    (tmp_path / "job.json").write_text(json.dumps(body))
    for verb in ("train", "check-job"):
        proc = ftkit([verb, "job.json"], cwd=tmp_path)
        assert proc.returncode == 1 and no_traceback(proc.stderr), proc.stderr
        assert proc.stderr.startswith("ftkit: job.json: the job's data cannot be trained on")
        for problem in ("empty answer", "empty prompt", "same as row 1"):
            assert problem in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_check_job_refuses_a_csv_without_the_answer_column(tmp_path, tiny_model_dir):
    body = job_body(tmp_path, tiny_model_dir)
    write_rows(tmp_path / "data" / "train.csv", even_rows(8), header=("prompt", "reply"))
    (tmp_path / "job.json").write_text(json.dumps(body))
    proc = ftkit(["check-job", "job.json"], cwd=tmp_path)
    assert proc.returncode == 1 and no_traceback(proc.stderr), proc.stderr
    assert "no answer column 'answer'" in proc.stderr and "is a valid job" not in proc.stderr


def test_data_warnings_are_printed_and_kept_in_the_job_log(tmp_path, tiny_model_dir):
    body = job_body(tmp_path, tiny_model_dir, local={"max_steps": 1})
    write_rows(tmp_path / "data" / "train.csv", [*even_rows(8), *even_rows(1)])  # row 9 repeats row 1
    (tmp_path / "job.json").write_text(json.dumps(body))
    check = ftkit(["check-job", "job.json"], cwd=tmp_path)
    assert check.returncode == 0 and "data warning: " in check.stderr and "same as row 1" in check.stderr
    proc = ftkit(["train", "job.json"], cwd=tmp_path)
    assert proc.returncode == 0 and no_traceback(proc.stderr), proc.stderr
    assert "data warning: " in proc.stdout and "same as row 1" in proc.stdout
    assert "same as row 1" in (tmp_path / "runs" / "tiny" / "job.log").read_text()


# --- 4. local.max_steps caps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_steps", "steps"), [(6, 3), (2, 2)])
def test_max_steps_caps_training_and_plan_estimate_and_run_agree(tmp_path, tiny_model_dir, max_steps, steps):
    body = job_body(tmp_path, tiny_model_dir, n_train=12, n_epochs=1, n_evals=1, local={"max_steps": max_steps})
    plan = estimate(body, measure=False).schedule
    assert (plan.total_steps, plan.evaluations) == (steps, [steps])
    job = train(body, quiet=True)
    rows = job.metrics()
    assert [r["step"] for r in rows if r["train_loss"] is not None] == list(range(1, steps + 1))
    assert [r["step"] for r in rows if r["eval_loss"] is not None] == [steps]  # the final model was evaluated
    assert job.record["progress"] == {"step": steps, "max_steps": steps}
    assert job.record["result"]["eval_loss"] is not None and max(r["epoch"] for r in rows) <= 1


# --- 5. damaged export archives ----------------------------------------------------------------------------------


def test_a_truncated_or_foreign_archive_is_named_and_leaves_nothing_behind(tmp_path, done_job, monkeypatch, capsys):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    good = tmp_path / "done.tar.gz"
    assert main(["export", str(done_job.path), "--out", str(good)]) == 0
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.tar.gz"
    (tmp_path / "notes.txt").write_text("not a model")
    with tarfile.open(foreign, "w:gz") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    write_rows(tmp_path / "test.csv", [("Is it?", "yes")], header=("prompt", "final_decision"))
    capsys.readouterr()
    for archive, message in ((cut, "is truncated or corrupt"), (foreign, "is not an ftkit export")):
        for argv in (
            ["generate", str(archive), "hi"],
            ["evaluate", str(archive), "--data", str(tmp_path / "test.csv")],
        ):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"ftkit: {archive} ") and message in err and no_traceback(err), err
    assert not any((tmp_path / "cache").rglob("*")), "nothing was extracted"


# --- 6. a job whose process was killed -------------------------------------------------------------------------


def _running_record(folder: Path, pid: int, started: float) -> Path:
    job = folder / "runs" / "killed"
    job.mkdir(parents=True)
    record = {"id": "killed", "name": "killed", "status": "running", "created_at": "2026-01-01T00:00:00+0000"}
    record.update(pid=pid, pid_started_at=started, host=socket.gethostname(), error=None, spec={})
    (job / "job.json").write_text(json.dumps(record))
    return job


@pytest.mark.parametrize("process", ["alive", "gone", "pid reused"])
def test_a_running_job_whose_process_is_gone_is_reported_failed_by_every_reader(tmp_path, capsys, process):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        if process == "gone":
            sleeper.kill()
            sleeper.wait()
        job_dir = _running_record(tmp_path, sleeper.pid, started - 5 if process == "pid reused" else started)
        raw = (job_dir / "job.json").read_text()
        runs = ["--jobs-dir", str(tmp_path / "runs")]
        main(["jobs", "--status", "running", *runs])
        running = capsys.readouterr().out
        main(["show", "killed", *runs])
        shown = json.loads(capsys.readouterr().out)
        code = main(["cancel", "killed", *runs])
        out, err = capsys.readouterr()
        if process == "alive":
            assert "killed" in running and shown["status"] == "running" and code == 0
            assert "cancel requested" in out and (job_dir / "CANCEL").is_file()
            return
        assert running.strip() == "no jobs"
        assert shown["status"] == "failed" and shown["error"] == jobstore.INTERRUPTED and shown["interrupted"]
        assert code == 1 and err == f"ftkit: job 'killed' is already failed: {jobstore.INTERRUPTED}\n"
        assert not (job_dir / "CANCEL").exists() and (job_dir / "job.json").read_text() == raw  # nothing written
        main(["jobs", "--status", "failed", *runs])
        assert "killed" in capsys.readouterr().out
    finally:
        if sleeper.poll() is None:
            sleeper.send_signal(signal.SIGKILL)
            sleeper.wait()


# --- 7. a Hub model while offline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "no route to the Hub"])
def test_a_hub_model_offline_fails_at_once_in_one_line(tmp_path, tiny_model_dir, offline):
    env = {"HF_HOME": str(tmp_path / "hf")}  # an empty Hugging Face cache
    env.update({"HF_HUB_OFFLINE": "1"} if offline == "HF_HUB_OFFLINE" else {"HF_ENDPOINT": "http://127.0.0.1:9"})
    body = job_body(tmp_path, tiny_model_dir, local={"max_steps": 1})
    (tmp_path / "job.json").write_text(json.dumps({**body, "base_model_id": "HuggingFaceTB/SmolLM2-360M-Instruct"}))
    for argv in (["generate", "HuggingFaceTB/SmolLM2-360M-Instruct", "hi"], ["train", "job.json"]):
        proc = ftkit(argv, cwd=tmp_path, env=env, timeout=60)
        assert proc.returncode == 1 and no_traceback(proc.stderr) and "Retrying" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ftkit: model 'HuggingFaceTB/SmolLM2-360M-Instruct'"), lines
        assert "cannot be reached" in lines[0] and "'bundled' instead" in lines[0]
    assert not (tmp_path / "runs").exists()


# --- 8. a closed pipe ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["metrics", "long"], ["metrics", "long", "--json"]])
def test_piping_into_head_ends_quietly(tmp_path, argv):
    job = tmp_path / "runs" / "long"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"id": "long", "name": "long", "status": "completed"}))
    (job / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "train_loss": 1.0}) + "\n" for i in range(20000)))
    env = {**os.environ, "FTKIT_JOBS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftkit", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    first = proc.stdout.readline()  # what `head -1` does: read one line, then close the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
    assert b"step" in first


# --- 9. one line per logged step, nothing else ---------------------------------------------------------------------


def test_training_prints_one_line_per_logged_step_and_no_third_party_noise(tmp_path, tiny_model_dir):
    body = job_body(tmp_path, tiny_model_dir, n_train=12, n_evals=1)  # 3 steps, an evaluation after step 3
    (tmp_path / "job.json").write_text(json.dumps(body))
    proc = ftkit(["train", "job.json"], cwd=tmp_path)  # output captured: no terminal
    assert proc.returncode == 0, proc.stderr
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("ftkit: step ")]
    assert [ln.split()[2] for ln in steps] == ["1/3", "2/3", "3/3", "3/3"]
    assert "train_loss" in steps[0] and "eval_loss" in steps[-1]
    for noise in ("{'loss'", "{'eval_loss'", "Warning", "Loading weights", "it/s]", "\r", "\x1b[", "mtime"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert proc.stderr == ""

    quiet = ftkit(["train", "job.json", "--fresh", "--quiet"], cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.splitlines() == [f"job tiny: completed -> {tmp_path / 'runs' / 'tiny' / 'model'}"]


# --- 10. a notebook that fails -------------------------------------------------------------------------------------


def test_a_failing_notebook_is_named_with_its_cell_and_the_error_alone(tmp_path):
    proc = ftkit(["notebooks", "run", "--only", "02", "-p", "batch_size=100", "--out", str(tmp_path / "nb")], tmp_path)
    assert proc.returncode == 1 and no_traceback(proc.stdout, proc.stderr), proc.stderr
    assert "ftkit: notebook 02_configure_job.ipynb failed in cell [" in proc.stderr
    assert "hyperparameters.batch_size: is too large (got 100" in proc.stderr
    assert str(tmp_path / "nb" / "notebooks" / "02_configure_job.ipynb") in proc.stderr
    for noise in ("PapermillExecutionError", "IPKernelApp", "JobSpecError"):
        assert noise not in proc.stderr


def test_what_the_kernel_process_writes_to_stderr_goes_to_a_log_not_the_terminal(tmp_path, capfd):
    # papermill's shutdown can make the kernel log a ZMQ traceback of its own (seen once in a CI-class run of the
    # test above); a cell writing to file descriptor 2 reaches the same place, deterministically
    import nbformat

    from ftkit.cookbook.runner import execute

    source = tmp_path / "noisy.ipynb"
    cell = "import os\nos.write(2, b'Traceback (most recent call last): kernel noise\\n')"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), source)
    (tmp_path / "out").mkdir()
    log = execute(source, tmp_path / "out" / "noisy.ipynb", {}, cwd=tmp_path)
    assert "kernel noise" not in capfd.readouterr().err
    assert log == tmp_path / "out" / "noisy.kernel.log" and "kernel noise" in log.read_text()
    quiet = tmp_path / "quiet.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), quiet)
    assert execute(quiet, tmp_path / "out" / "quiet.ipynb", {}, cwd=tmp_path) is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["noisy.ipynb", "noisy.kernel.log", "quiet.ipynb"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "batch_size", "3"], "-p 'batch_size' is not key=value: write -p batch_size=3"),
        (["-p", "batch_sise=3"], "batch_sise (did you mean batch_size?)"),
        (["--data-dir", "no-such-folder"], "--data-dir no-such-folder: no such folder"),
    ],
)
def test_notebook_parameters_are_checked_before_any_notebook_runs(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["notebooks", "run", "--out", str(tmp_path / "nb"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftkit: ") and message in err and no_traceback(err), err
    assert not (tmp_path / "nb").exists()


# --- 11. file modes follow the umask ----------------------------------------------------------------------------

_MODES = """
import json, os, sys
from pathlib import Path
os.umask(int(sys.argv[1], 8))
from ftkit.cli import main
job, out = Path(sys.argv[2]), Path(sys.argv[3])
if sys.argv[4] == "train":
    assert main(["train", str(job), "--quiet"]) == 0
    job = Path(json.loads(job.read_text())["local"]["output_dir"]) / "tiny"
assert main(["export", str(job), "--out", str(out / "job.tar.gz")]) == 0
assert main(["plot", str(job), "--out", str(out / "plot.png")]) == 0
paths = [job / "job.json", job / "metrics.jsonl", job / "model", *sorted((job / "model").iterdir()),
         out / "job.tar.gz", out / "plot.png"]
print(json.dumps({str(p.relative_to(p.parent.parent)): oct(p.stat().st_mode & 0o777) for p in paths}))
"""


def test_results_get_the_modes_the_umask_gives_any_file(tmp_path, tiny_model_dir):
    body = job_body(tmp_path, tiny_model_dir, local={"max_steps": 1})
    (tmp_path / "job.json").write_text(json.dumps(body))
    for umask, what, job in (("022", "train", tmp_path / "job.json"), ("027", "export", tmp_path / "runs" / "tiny")):
        out = tmp_path / f"out-{umask}"
        args = [sys.executable, "-c", _MODES, umask, str(job), str(out), what]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        modes = json.loads(proc.stdout.strip().splitlines()[-1])
        for path, mode in modes.items():
            folder = path.endswith("/model")
            expected = {"022": "0o755" if folder else "0o644", "027": "0o750" if folder else "0o640"}[umask]
            if umask == "027" and not path.startswith(f"out-{umask}"):
                continue  # the job was written under 022 by the first run
            assert mode == expected, (umask, path, mode)


# --- 12. smaller ------------------------------------------------------------------------------------------------


def test_a_job_is_found_by_the_job_file_it_ran_from(tmp_path, done_job, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FTKIT_JOBS_DIR", raising=False)
    spec = dict(done_job.record["spec"])  # local.output_dir points at the fixture's folder, not ./runs
    (tmp_path / "job.yaml").write_text(json.dumps(spec))
    assert main(["show", "job.yaml"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "done"
    assert main(["metrics", "job.yaml"]) == 0 and "train_loss" in capsys.readouterr().out
    assert main(["jobs", "job.yaml"]) == 0 and "done" in capsys.readouterr().out
    assert main(["plot", "job.yaml", "--out", "p.png"]) == 0 and (tmp_path / "p.png").is_file()


def test_prepare_says_that_max_train_leaves_validation_whole(tmp_path, pqal_path, capsys):
    argv = ["prepare", "pubmedqa", "--source", str(pqal_path), "--out", str(tmp_path / "pq"), "--max-train", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation keeps its 50 rows (--max-validation N subsamples it too)" in out
    with open(tmp_path / "pq" / "validation.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 50


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "ftkit: train: the following arguments are required: job"),
        (["jobs", "--status", "done"], "ftkit: jobs: argument --status: invalid choice: 'done'"),
        (["notebooks", "run", "--only"], "ftkit: notebooks run: argument --only: expected one argument"),
        (["frobnicate"], "ftkit: argument VERB: invalid choice: 'frobnicate'"),
    ],
)
def test_every_usage_error_has_the_one_ftkit_prefix(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ftkit") and err.splitlines()[-1].startswith(message), err


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(monkeypatch, capsys):
    import ftkit.cli.train as verbs

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(verbs, "_jobs", broken)
    assert main(["jobs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ftkit: internal error: ZeroDivisionError: division by zero\n") and no_traceback(err)
    assert "--debug" in err
