"""`ftkit serve` for real: a uvicorn server on 127.0.0.1 (random free port), driven with requests, ftkit's client and
the docs' own curl commands (read from the docs, only the host replaced), training tiny jobs on the bundled model.

One server and its jobs are shared by the tests of this file, which run in order: the first job completes, a long one
runs while another waits in the queue across a server restart, then the long one is cancelled and the waiting one is
killed with SIGKILL mid-training and resumed from its checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from ftkit.client import ApiError, FineTuningClient
from ftkit.job import store as jobstore
from ftkit.models.exported import extract_archive, read_manifest

SHARED = Path(os.environ.get("FTKIT_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
PUBMEDQA = SHARED / "pubmedqa"
DOCS = SHARED / "reference" / "nscale-fine-tuning-docs.txt"
DOCS_HOST = "https://fine-tuning.api.nscale.com"
ORG = "org-local"
PLANTED = "hf_" + secrets.token_hex(16)  # a Hub token that must never show up anywhere
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docs_curls() -> list[str]:
    """Every curl command of the docs, as written (continuation lines and the quoted JSON body included)."""
    lines, out, current = DOCS.read_text(encoding="utf-8").splitlines(), [], None
    for line in lines:
        if current is None and line.lstrip().startswith("curl "):
            current = [line]
        elif current is not None:
            current.append(line)
        if current is not None:
            text = "\n".join(current)
            if not text.rstrip().endswith("\\") and text.count("'") % 2 == 0:
                out.append(text)
                current = None
    return out


class Server:
    """A `ftkit serve` process over one jobs folder; restartable on a new port."""

    def __init__(self, root: Path):
        self.root, self.jobs_dir = root, root / "runs"
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "FTKIT_API_TOKEN"}
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: a Hub push fails fast, offline
        cmd = [sys.executable, "-m", "ftkit", "serve", "--port", str(self.port), "--jobs-dir", str(self.jobs_dir)]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([*cmd, "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        self.token = (self.jobs_dir / ".ftkit-server" / "token").read_text().strip()
        self.api = f"{self.url}/api/v1/organizations/{ORG}"
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.client = FineTuningClient(self.token, ORG, self.url)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.api}/{path}", headers=kw.pop("headers", self.headers), timeout=60, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(f"{self.api}/{path}", headers=kw.pop("headers", self.headers), timeout=120, **kw)

    def curl(self, command: str, cwd: Path, **env) -> subprocess.CompletedProcess:
        """A docs curl command with only the host replaced; -s -S -w adds the status code on a last line."""
        command = command.replace(DOCS_HOST, self.url).replace("curl ", "curl -s -S -w '\\n%{http_code}' ", 1)
        env = {**os.environ, "ORGANIZATION_ID": ORG, "NSCALE_API_TOKEN": self.token, **env}
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    def wait_for(self, job_id: str, statuses: tuple[str, ...], timeout: float = 1800) -> dict:
        # generous: a 2-step job takes ~30 s on a quiet 2-core machine, minutes when others train beside it
        deadline = time.monotonic() + timeout
        while (job := self.get(f"jobs/{job_id}").json())["status"] not in statuses:
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        return job


def _status_and_body(result: subprocess.CompletedProcess) -> tuple[int, str]:
    body, _, code = result.stdout.rpartition("\n")
    assert result.returncode == 0, result.stderr
    return int(code), body


def _write_questions(path: Path, items: list) -> Path:
    """Real PubMedQA rows, question and yes/no/maybe only: a few dozen tokens a row keeps CPU training to seconds."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        for _, r in items:
            w.writerow([r["QUESTION"], r["final_decision"]])
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    items = list(json.loads((PUBMEDQA / "ori_pqal.json").read_text()).items())
    root = tmp_path_factory.mktemp("data")
    return {
        "train": _write_questions(root / "train.csv", items[:8]),
        "val": _write_questions(root / "val.csv", items[8:10]),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"))
    srv.start()
    srv.state = {}
    yield srv
    if srv.proc.poll() is None:
        srv.stop()
    for job in jobstore.list_jobs(srv.jobs_dir):  # no training process outlives the tests
        if job.is_alive():
            os.kill(job.record["pid"], signal.SIGKILL)


def _error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and set(body) >= {"code", "message"} and "detail" not in body, body
    return body["message"]


def test_a_first_start_makes_a_private_token_printed_once_and_wrong_tokens_get_401(server, tmp_path):
    token_file = server.jobs_dir / ".ftkit-server" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert server.log.read_text().count(server.token) == 1  # printed on the first start only
    assert "missing bearer token" in _error(server.get("base-models", headers={}), 401, "unauthorized")
    message = _error(server.get("base-models", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    assert "wrong bearer token" in message and server.token not in message
    curl = docs_curls()[0]
    assert "/base-models" in curl
    code, body = _status_and_body(server.curl(curl, tmp_path, NSCALE_API_TOKEN="wrong"))
    assert code == 401 and json.loads(body)["code"] == "unauthorized"
    code, body = _status_and_body(server.curl(curl, tmp_path))
    models = json.loads(body)["data"]
    assert code == 200 and len(models) == 11 and models[-1]["id"] == "bundled"
    assert {"id", "name", "organization", "context_length", "batch_sizes", "precision"} <= set(models[0])
    assert models[0]["id"] == "e5f6a7b8-c9d0-1234-efab-567890123456" and models[0]["batch_sizes"][:2] == [4, 8]


def test_a_bad_csv_upload_lists_every_problem_with_its_line_and_row(server, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"question,answer\nq1,yes\nq2,no,extra\nq3\n\xff\xfe,maybe\n")
    with open(bad, "rb") as f:
        r = server.post("files", files={"file": ("bad.csv", f, "text/csv")})
    message = _error(r, 400, "invalid_file")
    assert "3 problems" in message and "bad.csv line 3, row 2: 3 fields, but the header has 2" in message
    assert "line 4, row 3: 1 fields" in message and "not valid UTF-8" in message
    checks = [(e["line"], e["check"]) for e in r.json()["errors"]]
    assert checks == [(3, "ragged_row"), (4, "ragged_row"), (5, "not_utf8")]
    assert server.client.files.list() == []  # nothing half-stored
    _error(server.post("files", data={"nofile": "x"}), 400, "invalid_request")


def test_files_dataset_dry_run_and_the_docs_job_curl_train_a_job_to_completion(server, data, tmp_path):
    c = server.client
    train, val = c.files.upload(data["train"]), c.files.upload(data["val"])
    assert train["columns"] == ["question", "answer"] and train["lines"] == 8 and train["name"] == "train.csv"
    assert train["bytes"] == data["train"].stat().st_size and train["download_url"].endswith("/content")
    ds = c.datasets.create("pubmedqa-questions", train["id"], val["id"])
    assert c.datasets.get(ds["id"]) == ds and ds["validation_file_id"] == val["id"]
    body = {
        "name": "dry",
        "base_model_id": "bundled",
        "dataset": {"id": ds["id"], "prompt_column": "question", "answer_column": "answer"},
    }
    dry = c.jobs.create(body, dry_run=True)
    assert dry["dry_run"] is True and dry["estimated_usage"]["tokens"] > 0 and dry["job"] is None
    assert c.jobs.list() == []  # a dry run creates nothing

    curl = docs_curls()[1]
    curl = curl.replace("<Base_Model_ID>", "bundled").replace("<Dataset_ID>", ds["id"])
    curl = curl.replace("<Your-Prompt-column-name>", "question").replace("Your-Answer-column-name", "answer")
    code, out = _status_and_body(server.curl(curl, tmp_path))
    created = json.loads(out)
    assert code == 200 and created["dry_run"] is False and created["id"] == created["job"]["id"]
    assert created["estimated_usage"] == {"tokens": dry["estimated_usage"]["tokens"], "cost": None}
    job = created["job"]
    assert job["name"] == "job name" and job["status"] in ("queued", "starting")
    # the docs' evaluation_epochs / warmup_epochs are read as the documented n_evals / warmup_ratio
    assert job["hyperparameters"]["n_evals"] == 1 and job["hyperparameters"]["warmup_ratio"] == 0.0
    assert job["hyperparameters"]["lora"] == {
        "enabled": True,
        "r": 8,
        "alpha": 16,
        "dropout": 0.01,
        "trainable_modules": [],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["created_at"])

    done = server.wait_for(job["id"], ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done["error"]
    assert done["progress"] == 1.0 and done["error"] is None and done["completed_at"] == done["finished_at"]
    assert done["started_at"].endswith("Z") and done["started_at"] <= done["finished_at"]
    assert Path(done["fine_tuned_model"], "adapter_model.safetensors").is_file()
    code, out = _status_and_body(server.curl(docs_curls()[2], tmp_path))  # the docs' list curl
    assert code == 200 and [j["id"] for j in json.loads(out)["data"]] == [job["id"]]
    server.state.update(dataset=ds, train=train, val=val, job=job["id"])


def test_metrics_come_back_as_a_bare_list_from_the_docs_curl(server, tmp_path):
    code, out = _status_and_body(server.curl(docs_curls()[3], tmp_path, JOB_ID=server.state["job"]))
    records = json.loads(out)
    assert code == 200 and isinstance(records, list)
    assert [r["step"] for r in records if r["train_loss"] is not None] == [1, 2]
    last = records[-1]
    assert last["eval_loss"] > 0 and math.isclose(last["perplexity"], math.exp(last["eval_loss"]), rel_tol=1e-6)
    assert {"step", "train_loss", "eval_loss", "perplexity", "epoch", "learning_rate"} <= set(last)


def test_the_model_downloads_by_redirect_and_by_json_and_the_docs_python_snippet_runs(server, data, tmp_path):
    job_id = server.state["job"]
    code, _ = _status_and_body(server.curl(docs_curls()[5], tmp_path, JOB_ID=job_id))
    by_redirect = tmp_path / "fine_tuned_model.tar.gz"
    assert code == 200 and tarfile.is_tarfile(by_redirect)
    link = server.get(f"jobs/{job_id}/download", headers={**server.headers, "Accept": "application/json"}).json()
    assert link["filename"] == f"{job_id}.tar.gz" and link["expires_at"].endswith("Z")
    assert link["bytes"] == by_redirect.stat().st_size
    # the demo client sends Content-Type: application/json on every request and expects JSON back
    as_demo = server.get(f"jobs/{job_id}/download", headers={**server.headers, "Content-Type": "application/json"})
    assert as_demo.json()["sha256"] == link["sha256"]
    _error(
        requests.get(link["download_url"].replace("signature=", "signature=0"), timeout=30), 403, "invalid_signature"
    )

    # the docs' snippet, with ftkit's client in place of the service's
    token, org_id = server.token, ORG
    with FineTuningClient(api_token=token, organization_id=org_id, base_url=server.url) as client:
        client.jobs.download_model(job_id=job_id, output_path=str(tmp_path / "exports/fine_tuned_model.tar.gz"))
        dataset = client.datasets.get(server.state["dataset"]["id"])
        client.files.download_file(file_id=dataset["training_file_id"], output_path=str(tmp_path / "exports/train.csv"))
        if dataset.get("validation_file_id"):
            client.files.download_file(
                file_id=dataset["validation_file_id"], output_path=str(tmp_path / "exports/validation.csv")
            )
    by_json = tmp_path / "exports/fine_tuned_model.tar.gz"
    assert by_json.read_bytes() == by_redirect.read_bytes()
    assert (tmp_path / "exports/train.csv").read_bytes() == data["train"].read_bytes()
    assert (tmp_path / "exports/validation.csv").read_bytes() == data["val"].read_bytes()
    manifest = read_manifest(extract_archive(by_json, tmp_path / "extracted"))
    assert manifest["kind"] == "adapter" and manifest["job"]["id"] == job_id
    assert (tmp_path / "extracted" / "adapter_model.safetensors").is_file()


def test_a_hub_export_is_accepted_and_its_token_is_never_stored_logged_or_echoed(server, tmp_path):
    job_id = server.state["job"]
    curl = docs_curls()[4].replace("hf_xxx", PLANTED)
    code, out = _status_and_body(server.curl(curl, tmp_path, JOB_ID=job_id))
    assert code == 202 and PLANTED not in out
    export = json.loads(out)
    assert export["status"] == "running" and export["huggingface_repository_id"] == "your-hf-username/your-model-repo"
    deadline = time.monotonic() + 60
    while (exports := server.client.jobs.exports(job_id))[0]["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert exports[0]["status"] == "failed" and "could not reach the Hugging Face Hub" in exports[0]["error"]
    bad = server.post(f"jobs/{job_id}/exports/hugging-face", json={"huggingface_access_token": PLANTED})
    message = _error(bad, 422, "invalid_export")
    assert "huggingface_repository_id: is required" in message and PLANTED not in bad.text
    leaks = [p for p in server.root.rglob("*") if p.is_file() and PLANTED.encode() in p.read_bytes()]
    assert leaks == []  # server log, database (and its WAL), job folders, archives


def test_bad_requests_get_a_code_and_a_message_never_a_traceback(server, data):
    ds = server.state["dataset"]["id"]
    body = {
        "name": "",
        "base_model_id": "llama-9000",
        "dataset": {"id": ds, "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"n_epochs": 0, "batch_size": 4, "lr": 0.1, "lora": {"r": 65}},
        "local": {"output_dir": "/tmp/elsewhere"},
    }
    r = server.post("jobs", json=body)
    message = _error(r, 422, "invalid_job")
    paths = sorted(e["path"] for e in r.json()["errors"])
    assert paths == [
        "base_model_id",
        "dataset.prompt_column",
        "dataset.prompt_column",
        "hyperparameters.lora.r",
        "hyperparameters.lr",
        "hyperparameters.n_epochs",
        "local.output_dir",
        "name",
    ], message
    assert "did you mean 'learning_rate'?" in message and "train.csv: no prompt column 'prompt'" in message
    assert "unknown model 'llama-9000'" in message and len(server.client.jobs.list()) == 1
    unknown = server.post("jobs", json={**body, "dataset": {"id": "nope", "answer_column": "answer"}}).json()
    assert {"path": "dataset.id", "value": "nope", "message": "no dataset with this id"}.items() <= next(
        e for e in unknown["errors"] if e["path"] == "dataset.id"
    ).items()
    _error(
        server.post("jobs", data="{not json", headers={**server.headers, "Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    for path in ("jobs/nope", "jobs/nope/metrics", "jobs/nope/download", "files/nope", "datasets/nope"):
        assert "no " in _error(server.get(path), 404, "not_found")
    _error(server.post("jobs/nope/cancel"), 404, "not_found")
    _error(requests.put(f"{server.api}/jobs", headers=server.headers, timeout=30), 405, "method_not_allowed")
    _error(server.get("jobs", params={"status": "done"}), 422, "invalid_request")
    _error(server.get("jobs", params={"limit": "many"}), 422, "invalid_request")
    assert server.get("jobs", params={"pagination": "False", "limit": 5}).status_code == 200
    _error(server.post("datasets", json={"name": "x", "training_file_id": "nope"}), 422, "invalid_dataset")
    _error(
        requests.delete(f"{server.api}/files/{server.state['train']['id']}", headers=server.headers, timeout=30),
        409,
        "file_in_use",
    )
    with pytest.raises(ApiError) as e:
        server.client.jobs.cancel(server.state["job"])
    assert e.value.status == 409 and e.value.code == "job_finished"


def _job(server, name: str, epochs: int, **local) -> dict:
    ds = server.state["dataset"]["id"]
    body = {
        "name": name,
        "base_model_id": "bundled",
        "dataset": {"id": ds, "prompt_column": "question", "answer_column": "answer"},
        "hyperparameters": {"n_epochs": epochs, "batch_size": 4, "learning_rate": 1e-4},
        "local": {"precision": "fp32", **local},  # fp32: no bf16 speed probe, the same speed on every CPU
    }
    return server.client.jobs.create(body)["job"]


def test_a_queued_job_survives_a_server_restart_and_a_running_one_is_cancelled(server):
    long = _job(server, "long", 20)
    server.wait_for(long["id"], ("running",))
    short = _job(server, "short", 2, save_steps=2)
    assert server.client.jobs.get(short["id"])["status"] == "queued"
    assert server.client.jobs.get(short["id"])["queue_position"] == 1
    message = _error(server.get(f"jobs/{short['id']}/download"), 409, "job_not_completed")
    assert "is queued" in message
    _error(server.get(f"jobs/{long['id']}/download"), 409, "job_not_completed")

    server.stop()  # the worker runs on in its own session
    assert jobstore.Job(server.jobs_dir / long["id"]).is_alive()
    server.start()
    assert server.client.jobs.get(short["id"])["status"] == "queued"
    assert [j["id"] for j in server.client.jobs.list(status="queued")] == [short["id"]]
    assert server.client.jobs.get(long["id"])["status"] == "running"

    cancelling = server.client.jobs.cancel(long["id"])
    assert cancelling["id"] == long["id"]
    cancelled = server.wait_for(long["id"], ("cancelled", "failed", "completed"), timeout=300)
    assert cancelled["status"] == "cancelled" and cancelled["error"] is None
    assert jobstore.Job(server.jobs_dir / long["id"]).status == "cancelled"
    assert [j["id"] for j in server.client.jobs.list(status="cancelled")] == [long["id"]]
    assert [j["id"] for j in server.client.jobs.list(status="completed")] == [server.state["job"]]
    assert server.log.read_text().count(server.token) == 1  # not printed again on restart
    server.state["short"] = short["id"]


def test_a_worker_killed_mid_job_fails_the_job_which_resumes_from_its_checkpoint(server):
    job_id = server.state["short"]
    folder = server.jobs_dir / job_id
    deadline = time.monotonic() + 1800
    while not (folder / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert time.monotonic() < deadline, server.client.jobs.get(job_id)
        time.sleep(0.2)
    pid = jobstore.Job(folder).record["pid"]
    os.kill(pid, signal.SIGKILL)
    failed = server.wait_for(job_id, ("failed", "completed", "cancelled"), timeout=120)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_killed" and set(failed["error"]) == {"code", "message"}
    assert "killed by SIGKILL" in failed["error"]["message"] and f"jobs/{job_id}/resume" in failed["error"]["message"]
    assert jobstore.Job(folder).status == "failed"  # the job store says so too (`ftkit jobs`)
    _error(server.get(f"jobs/{job_id}/download"), 409, "job_not_completed")

    resumed = server.client.jobs.resume(job_id)
    assert resumed["status"] == "queued" and resumed["error"] is None
    done = server.wait_for(job_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done["error"]
    assert "resuming from checkpoint-" in (folder / "job.log").read_text()
    steps = [r["step"] for r in server.client.jobs.metrics(job_id) if r["train_loss"] is not None]
    assert steps == [1, 2, 3, 4]
    _error(server.post(f"jobs/{job_id}/resume"), 409, "job_not_resumable")


def test_a_worker_that_dies_while_the_server_is_down_is_marked_failed_at_the_next_start(server):
    job = _job(server, "lost", 20)
    server.wait_for(job["id"], ("running",))
    server.stop()
    folder = server.jobs_dir / job["id"]
    pid = jobstore.Job(folder).record["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while jobstore.pid_alive(pid):  # a zombie where PID 1 does not reap: no parent is left to wait for it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    server.start()
    lost = server.client.jobs.get(job["id"])
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost"
    assert "ended while the server was down" in lost["error"]["message"]
    assert jobstore.Job(folder).status == "failed"


def test_binding_beyond_loopback_needs_a_chosen_token(tmp_path, monkeypatch, capsys):
    from ftkit.cli import main

    monkeypatch.delenv("FTKIT_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--jobs-dir", str(tmp_path)]) == 2
    assert "set FTKIT_API_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / ".ftkit-server").exists()  # refused before anything is written
    assert main(["serve", "--workers", "0", "--jobs-dir", str(tmp_path)]) == 2


def test_the_client_and_the_command_line_import_without_the_server_extra():
    code = (
        "import sys; sys.modules.update(fastapi=None, uvicorn=None, starlette=None)\n"
        "import ftkit.client, ftkit.cli\n"
        "from ftkit.cli import main\n"
        "sys.exit(main(['serve', '--jobs-dir', sys.argv[1]]))"
    )
    r = subprocess.run([sys.executable, "-c", code, "/nonexistent/jobs"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'ftkit[server]'" in r.stderr and "Traceback" not in r.stderr
