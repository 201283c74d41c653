"""The job queue: first in, first out, ``workers`` jobs at a time, each in its own ``python -m ftkit train`` process.

A crash or an out-of-memory kill of a worker never takes the server down: the queue sees the process end and marks
the job failed, resumable from its last checkpoint (``POST jobs/{id}/resume``). Workers run in their own session,
so they outlive a server restart; the next server start re-attaches to the live ones (``Job.is_alive``) and marks
the dead ones failed. Status, progress and metrics come from the job store (:mod:`ftkit.job.store`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ftkit.files import write_json
from ftkit.job import store as jobstore
from ftkit.server.db import Database, utc_now

ACTIVE = ("starting", "running")
ENDED = ("completed", "failed", "cancelled")


@dataclass
class Worker:
    """A training process: started by this server (``proc``), or found alive at start (``pid`` only)."""

    pid: int
    slot: int = 0
    proc: subprocess.Popen | None = None
    signalled: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None if self.proc is not None else jobstore.pid_alive(self.pid)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode


def gpu_count() -> int:
    """NVIDIA GPUs visible to this server (``nvidia-smi -L``), without importing torch."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


class Scheduler:
    """Starts queued jobs and follows running ones, on one background thread polling every ``poll`` seconds."""

    def __init__(self, db: Database, jobs_dir: Path, state: Path, workers: int, poll: float = 0.5):
        self.db, self.jobs_dir, self.state, self.slots, self.poll = db, Path(jobs_dir), Path(state), workers, poll
        self.gpus = gpu_count()
        self.workers: dict[str, Worker] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="ftkit-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following jobs; running workers go on and the next server start re-attaches to them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # one bad tick must not stop the queue for good
                self.tick()
            self._stop.wait(self.poll)

    def job(self, job_id: str) -> jobstore.Job:
        return jobstore.Job(self.jobs_dir / job_id)

    def recover(self) -> None:
        """At server start: re-attach to live workers of jobs the database says are active; the rest end."""
        for row in self.db.select("SELECT * FROM jobs WHERE status IN ('starting', 'running')"):
            job = self.job(row["id"])
            rec = _record(job)
            if rec.get("status") == "running" and job.is_alive():
                self.workers[row["id"]] = Worker(pid=rec["pid"], slot=self._free_slot())
            elif rec.get("status") in (None, "queued") and row["pid"] and Worker(row["pid"]).alive():
                # still loading, before job.json says running
                self.workers[row["id"]] = Worker(pid=row["pid"], slot=self._free_slot())
            else:
                self.finish(row, None)

    # ---------------------------------------------------------------- the tick
    def tick(self) -> None:
        with self.lock:
            for row in self.db.select("SELECT * FROM jobs WHERE status IN ('starting', 'running')"):
                self._follow(row)
            free = self.slots - len(self.workers)
            if free > 0:
                queued = self.db.select(
                    "SELECT * FROM jobs WHERE status = 'queued' ORDER BY queued_at LIMIT ?", (free,)
                )
                for row in queued:
                    self.launch(row)

    def _follow(self, row: dict) -> None:
        worker = self.workers.get(row["id"])
        if worker is None or not worker.alive():
            self.finish(row, worker)
            return
        rec = _record(self.job(row["id"]))
        if row["cancel_requested"] and not worker.signalled:
            if rec.get("status") == "running":
                with contextlib.suppress(jobstore.JobError):
                    jobstore.cancel(row["id"], self.jobs_dir)  # CANCEL file + SIGTERM: stops after this step
            else:
                os.kill(worker.pid, signal.SIGTERM)  # still loading: nothing to checkpoint yet
            worker.signalled = True
        if rec.get("status") == "running" and row["status"] == "starting":
            self.db.update("jobs", row["id"], status="running", started_at=utc_now())

    def launch(self, row: dict) -> None:
        """Start ``python -m ftkit train`` on the job's engine body; its output goes to the job's worker log."""
        spec_file = self.state / "specs" / f"{row['id']}.json"
        write_json(spec_file, row["spec"])
        log = self.state / "logs" / f"{row['id']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env, slot = dict(os.environ), self._free_slot()
        if self.gpus:  # one GPU per worker slot
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        cmd = [sys.executable, "-m", "ftkit", "train", str(spec_file), "--jobs-dir", str(self.jobs_dir), "--quiet"]
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"[{utc_now()}] {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        self.workers[row["id"]] = Worker(pid=proc.pid, slot=slot, proc=proc)
        self.db.update("jobs", row["id"], status="starting", pid=proc.pid, attempts=row["attempts"] + 1)

    def _free_slot(self) -> int:
        used = {w.slot for w in self.workers.values()}
        return next(i for i in range(len(used) + 1) if i not in used)

    # ---------------------------------------------------------------- ending
    def finish(self, row: dict, worker: Worker | None) -> None:
        """The worker is gone: take the job's end from job.json, or record how the process died."""
        self.workers.pop(row["id"], None)
        job = self.job(row["id"])
        rec = _record(job)
        status, now = rec.get("status"), utc_now()
        if row["cancel_requested"] and status != "completed":
            if rec and status != "cancelled":
                job.update(status="cancelled", finished_at=jobstore.now(), pid=None)
            self.db.update("jobs", row["id"], status="cancelled", finished_at=now, pid=None)
            return
        if status in ENDED:
            error = rec.get("error") if status == "failed" else None
            self.db.update(
                "jobs", row["id"], status=status, finished_at=now, pid=None, error=error,
                error_code="training_failed" if error else None,
            )  # fmt: skip
            return
        if status in (None, "queued") and worker is None:  # found at server start, never began: keeps its place
            self.db.update("jobs", row["id"], status="queued", pid=None)
            return
        code, message = _death(row, rec, worker, self.state)
        if rec:
            job.update(status="failed", finished_at=jobstore.now(), error=message, pid=None)
        self.db.update("jobs", row["id"], status="failed", finished_at=now, pid=None, error=message, error_code=code)


def _record(job: jobstore.Job) -> dict:
    try:
        return job.record
    except (jobstore.JobError, ValueError):  # not written yet, or being replaced
        return {}


def _death(row: dict, rec: dict, worker: Worker | None, state: Path) -> tuple[str, str]:
    """(code, message) for a worker that ended without the engine recording an end."""
    rc = worker.returncode() if worker is not None else None
    step = (rec.get("progress") or {}).get("step")
    at = f" at step {step}" if step is not None else ""
    resume = f"POST jobs/{row['id']}/resume to continue from its last checkpoint"
    if rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        return "worker_killed", f"the training process (pid {row['pid']}) was killed by {name}{at}; {resume}"
    if rc is None:
        return "worker_lost", f"the training process (pid {row['pid']}) ended while the server was down{at}; {resume}"
    return "worker_failed", f"the training process exited with code {rc}{at}: {_last_line(state, row['id'])}; {resume}"


def _last_line(state: Path, job_id: str) -> str:
    """The last ``ftkit: ...`` line of a worker's log: the engine's or the command line's own message."""
    try:
        lines = (state / "logs" / f"{job_id}.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no output"
    said = [ln for ln in lines if ln.startswith("ftkit: ")]
    return (said or lines or ["no output"])[-1].removeprefix("ftkit: ")[:500]
