"""A job form for notebooks (ipywidgets): every job field with the spec's ranges, validation messages beside
the fields as you type, column choices read from the CSV header, an estimate that runs beside the kernel (progress,
Stop), a preview of one training example coloured by trained tokens and cut like the job cuts it, and "Save job".

The form only writes a job body and checks it with :func:`ftkit.job.spec.load_job`; nothing depends on it.
Notebooks run headless (papermill) take the job from their parameters instead, and displaying the form there
is harmless: without a frontend it shows as a static table of the job (also what a reader sees before running).
"""

from __future__ import annotations

import csv
import html
import os
import re
import threading
import warnings
from pathlib import Path

from ftkit.cookbook.formfields import (
    HP_FIELDS,
    LABELS_OFF,
    LORA_FIELDS,
    NO_PROMPT,
    TEXT_OR_NULL,
    ZERO_IS_NULL,
    FormFields,
    csv_header,
    default,
)
from ftkit.cookbook.tokenview import render_trained_tokens
from ftkit.job.problems import JobSpecError, JobSpecWarning, SpecProblem
from ftkit.job.save import save_job
from ftkit.job.spec import JobSpec, LocalSettings, load_job
from ftkit.models.catalog import ANY_BATCH_SIZE, resolve_model
from ftkit.models.loading import load_tokenizer
from ftkit.train.estimate import EstimateCancelled, estimate


class JobForm(FormFields):
    """Fill in a fine-tuning job. ``form.spec`` is the validated :class:`~ftkit.job.spec.JobSpec` (it raises
    :class:`~ftkit.job.problems.JobSpecError` with every problem the form shows); ``form.widgets`` maps field paths
    to their widgets, ``form.errors`` lists the current problems. Display it by leaving it last in a cell.

    ``save_path`` is where "Save job" writes (notebook 02 passes the job file notebook 03 trains); ``saved_to`` is
    the file the last successful save wrote. ``estimate_steps`` is the estimate's default number of timed steps.
    Relative paths in the fields are relative to ``base_dir`` (the job's folder, else the current folder)."""

    def __init__(
        self,
        spec=None,
        *,
        base_dir: str | Path | None = None,
        save_path: str | os.PathLike = "job.json",
        estimate_steps: int = 3,
    ):
        if spec is not None and not isinstance(spec, JobSpec):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JobSpecWarning)
                spec = load_job(spec, base_dir=base_dir)
        self.base_dir = Path(base_dir) if base_dir else (spec.base_dir if spec is not None else Path.cwd())
        self.errors: list[SpecProblem] = []
        self.notes: list[str] = []
        self.last_estimate = None
        self.saved_to: Path | None = None
        self._estimating: threading.Thread | None = None
        self._stop = threading.Event()
        self._tokenizers: dict = {}
        self._quiet = True
        self._build(spec.normalized() if spec is not None else None, save_path, estimate_steps)
        if spec is not None:
            self._select_model(spec.base_model_id, spec.resolved_model())
        self._update_batch_sizes()
        self._update_columns(keep=spec is not None)
        self._update_lora()
        self._quiet = False
        for w in [*self.widgets.values(), *self.modules.values()]:
            w.observe(self._changed, names="value")
        self.refresh()

    # --- keeping choices consistent ---
    @property
    def model_ref(self) -> str:
        """The base_model_id the form writes: the "or model" text when given, else the catalog entry."""
        return self.widgets["model_other"].value.strip() or self.widgets["base_model_id"].value

    def _select_model(self, ref: str, info) -> None:
        dd = self.widgets["base_model_id"]
        if info.kind in ("catalog", "bundled"):
            # keep the reference as the job gave it (name, UUID or repo id), on the entry it names
            dd.options = [(label, ref if resolve_model(value) == info else value) for label, value in dd.options]
            dd.value = ref
        else:
            self.widgets["model_other"].value = ref

    def _update_batch_sizes(self) -> None:
        try:
            sizes = resolve_model(self.model_ref, self.base_dir).batch_sizes
        except ValueError:
            sizes = ANY_BATCH_SIZE
        bs = self.widgets["hyperparameters.batch_size"]
        current = bs.value
        bs.options = sizes
        bs.value = current if current in sizes else min(sizes, key=lambda s: (abs(s - (current or 0)), s))
        self._update_micro()

    def _update_micro(self) -> None:
        mb, batch = self.widgets["local.micro_batch_size"], self.widgets["hyperparameters.batch_size"].value
        current, self._micro_initial = (mb.value, None) if self._micro_initial is None else (self._micro_initial, None)
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        mb.options = [("auto (= batch_size)", 0)] + [(str(d), d) for d in divisors]
        mb.value = current if current in divisors else 0

    def _update_columns(self, keep: bool = False) -> None:
        """Column choices from the training CSV's header. The current column stays selected when the header
        has it; else the column named like the field ("prompt", "answer"), else none. With ``keep`` (a job
        given to the form, or an unreadable file) the job's own column stays even if missing, so its problem
        is reported rather than silently replaced."""
        text = self.widgets["dataset.id"].value.strip()
        path = Path(text).expanduser()
        self._header = csv_header(path if path.is_absolute() else self.base_dir / path) if text else None
        cols = list(self._header or [])
        keep = keep or self._header is None
        pr, an = self.widgets["dataset.prompt_column"], self.widgets["dataset.answer_column"]
        chosen = []
        for w, start, preferred in ((pr, self._columns[0], "prompt"), (an, self._columns[1], "answer")):
            current = w.value if w.options else start
            if current in cols or (keep and current):
                chosen.append(current)
            else:
                chosen.append(preferred if preferred in cols else None)
        extra = lambda c: [c] if c and c not in cols else []  # noqa: E731
        pr.options = [("(none: train on answers only)", NO_PROMPT)] + [(c, c) for c in cols + extra(chosen[0])]
        an.options = cols + extra(chosen[1])
        pr.value, an.value = chosen[0] or NO_PROMPT, chosen[1]

    def _update_lora(self) -> None:
        off = not self.widgets["hyperparameters.lora.enabled"].value
        for name in LORA_FIELDS[1:]:
            self.widgets[f"hyperparameters.lora.{name}"].disabled = off
        for box in self.modules.values():
            box.disabled = off

    def _changed(self, change) -> None:
        if self._quiet:
            return
        owner = change["owner"]
        self._quiet = True
        try:
            if owner in (self.widgets["base_model_id"], self.widgets["model_other"]):
                self._update_batch_sizes()
            elif owner is self.widgets["hyperparameters.batch_size"]:
                self._update_micro()
            elif owner is self.widgets["dataset.id"]:
                self._update_columns()
            elif owner is self.widgets["hyperparameters.lora.enabled"]:
                self._update_lora()
        finally:
            self._quiet = False
        self.refresh()
        if owner is self.widgets["hyperparameters.mask_prompt_labels"] and self.preview_html.value:
            self._preview()

    # --- the body and its validation ---
    def body(self) -> dict:
        """The job body as the form stands: every service field, and the local settings that differ from
        their defaults."""
        v = {p: w.value for p, w in self.widgets.items()}
        dataset = {"id": v["dataset.id"].strip()}
        if v["dataset.prompt_column"] not in (None, NO_PROMPT):
            dataset["prompt_column"] = v["dataset.prompt_column"]
        if v["dataset.answer_column"] is not None:
            dataset["answer_column"] = v["dataset.answer_column"]
        hp = {name: v[f"hyperparameters.{name}"] for name in HP_FIELDS}
        hp["lora"] = {name: v[f"hyperparameters.lora.{name}"] for name in LORA_FIELDS}
        hp["lora"]["trainable_modules"] = [m for m, box in self.modules.items() if box.value]
        local = {}
        for name in LocalSettings.model_fields:
            value = v[f"local.{name}"]
            value = (value.strip() or None) if name in TEXT_OR_NULL else value
            value = None if name in ZERO_IS_NULL and value == 0 else value
            if name == "labels":
                text = value.strip()
                value = [] if text == LABELS_OFF else [x.strip() for x in text.split(",") if x.strip()] or None
            if value != default(LocalSettings, name):
                local[name] = value
        body = {"name": v["name"], "base_model_id": self.model_ref, "dataset": dataset, "hyperparameters": hp}
        return {**body, "local": local} if local else body

    def _check(self) -> tuple[JobSpec | None, list[SpecProblem], list[str]]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JobSpecWarning)
                spec = load_job(self.body(), base_dir=self.base_dir)
        except JobSpecError as e:
            return None, list(e.errors), []
        problems = []
        try:
            spec.dataset_files()
        except JobSpecError as e:
            problems += e.errors
        if self._header is not None:
            for col in ("prompt_column", "answer_column"):
                value = getattr(spec.dataset, col)
                if value is not None and value not in self._header:
                    problems.append(
                        SpecProblem(
                            f"dataset.{col}",
                            value,
                            "is not a column of the training CSV",
                            "one of " + ", ".join(self._header),
                        )
                    )
        return (None if problems else spec), problems, spec.notes

    def refresh(self) -> None:
        """Validate the form and show each problem beside its field and in the messages area."""
        self._spec, self.errors, self.notes = self._check()
        for box in self._messages.values():
            box.value = ""
        for p in self.errors:
            path = p.path.split("[")[0].replace("model_other", "base_model_id")
            while path not in self._messages and "." in path:
                path = path.rsplit(".", 1)[0]
            if path in self._messages:
                self._messages[path].value += f"<span style='color:#b00020'>{html.escape(str(p))}</span> "
        if self.errors:
            items = "".join(f"<li>{html.escape(str(p))}</li>" for p in self.errors)
            self.messages.value = (
                f"<div style='color:#b00020'><b>{len(self.errors)} problem(s):</b><ul>{items}</ul></div>"
            )
        else:
            notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
            self.messages.value = "<div style='color:#1b5e20'><b>valid job</b></div>" + (
                f"<ul>{notes}</ul>" if notes else ""
            )

    @property
    def spec(self) -> JobSpec:
        """The validated job; :class:`JobSpecError` lists every problem the form shows."""
        spec, problems, _ = self._check()
        if problems:
            raise JobSpecError(problems, "job form")
        return spec

    def message_for(self, path: str) -> str:
        """The text of the message beside a field (empty when the field is fine)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self._messages[path].value)).strip()

    # --- actions ---
    def _estimate(self, _=None) -> None:
        """Start the estimate in a thread, so the kernel stays free; progress and Stop show while it runs."""
        if self._estimating is not None and self._estimating.is_alive():
            return
        try:
            spec = self.spec
        except JobSpecError as e:
            self.estimate_html.value = f"<pre style='color:#b00020'>{html.escape(str(e))}</pre>"
            return
        self._stop.clear()
        self.estimate_progress.value, self.estimate_stage.value = 0, "starting"
        self.estimate_html.value = ""
        self.estimate_running.layout.display = "flex"
        self.estimate_button.disabled = True
        args = (spec, self.estimate_measure.value, self.estimate_steps.value)
        self._estimating = threading.Thread(target=self._run_estimate, args=args, daemon=True)
        self._estimating.start()

    def _run_estimate(self, spec, measure: bool, steps: int) -> None:
        try:
            self.last_estimate = estimate(spec, measure=measure, steps=steps, progress=self._progress)
            result = self.last_estimate._repr_html_()
        except EstimateCancelled:
            result = "<b>Estimate cancelled</b> (Stop): nothing was measured; press Estimate to start again."
        except Exception as e:  # shown in the panel: a notebook user should not get a traceback here
            result = f"<pre style='color:#b00020'>{html.escape(str(e))}</pre>"
        self.estimate_running.layout.display = "none"
        self.estimate_button.disabled = False
        self.estimate_html.value = result

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._stop.is_set():
            raise EstimateCancelled("the estimate was stopped")
        self.estimate_progress.max, self.estimate_progress.value = total, done
        self.estimate_stage.value = f"{stage} ({done}/{total})"

    def _stop_estimate(self, _=None) -> None:
        self._stop.set()
        self.estimate_stage.value = "stopping after the current step..."

    def wait_estimate(self, timeout: float | None = None) -> None:
        """Wait for a running estimate to finish (for scripts and tests; the form itself never blocks)."""
        if self._estimating is not None:
            self._estimating.join(timeout)

    def _preview(self, _=None) -> None:
        try:
            spec = self.spec
            info = spec.resolved_model()
            key = (info.source, spec.local.trust_remote_code)
            if key not in self._tokenizers:
                self._tokenizers[key] = load_tokenizer(info, trust_remote_code=spec.local.trust_remote_code)
            with open(spec.dataset_files().train, encoding="utf-8-sig", newline="") as f:
                row = next(csv.DictReader(f), None)
            if row is None:
                raise ValueError("the training CSV has no rows")
            ds = spec.dataset
            prompt = row[ds.prompt_column] if ds.prompt_column else None
            self.preview_html.value = render_trained_tokens(
                self._tokenizers[key],
                prompt,
                row[ds.answer_column],
                spec.hyperparameters.mask_prompt_labels,
                max_seq_length=spec.max_seq_length(),
            )
        except Exception as e:
            self.preview_html.value = f"<pre style='color:#b00020'>{html.escape(str(e))}</pre>"

    def _save(self, _=None) -> None:
        target = Path(self.save_path.value.strip()).expanduser()
        target = target if target.is_absolute() else self.base_dir / target
        try:
            path = save_job(self.spec, target)
        except (JobSpecError, OSError) as e:
            self.save_status.value = f"<pre style='color:#b00020'>not saved: {html.escape(str(e))}</pre>"
            return
        self.saved_to = path.resolve()
        self.save_status.value = f"saved to <code>{html.escape(str(self.saved_to))}</code>"

    def _shown_path(self, text: str) -> str:
        """A path as the form shows it: relative to base_dir when that stays short, else as given."""
        path = Path(text).expanduser()
        if not text or not path.is_absolute():
            return text
        rel = os.path.relpath(path, self.base_dir)
        return rel if Path(rel).parts.count("..") <= 1 else text

    def _repr_mimebundle_(self, **kwargs):
        """The live widgets, with a static table of the job for frontends without widgets (GitHub, a notebook
        opened before running) and a one-line text."""
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        state = "valid" if not self.errors else f"{len(self.errors)} problem(s)"
        bundle["text/plain"] = f"JobForm(job {self.widgets['name'].value!r}, {state}): run the notebook to edit it"
        bundle["text/html"] = self._snapshot_html()
        return bundle

    def _snapshot_html(self) -> str:
        rows, body = [], self.body()
        hp = body.get("hyperparameters", {})
        flat = {"name": body["name"], "base_model_id": body["base_model_id"]}
        flat |= {f"dataset.{k}": v for k, v in body["dataset"].items()}
        flat |= {f"hyperparameters.{k}": v for k, v in hp.items() if k != "lora"}
        flat |= {f"hyperparameters.lora.{k}": v for k, v in hp.get("lora", {}).items()}
        flat |= {f"local.{k}": v for k, v in body.get("local", {}).items()}
        for key, value in flat.items():
            value = self._shown_path(value) if isinstance(value, str) else value
            msg = self.message_for(key) if key in self._messages else ""
            rows.append(
                f"<tr><td style='text-align:left'><code>{html.escape(key)}</code></td>"
                f"<td style='text-align:left'>{html.escape(str(value))}</td>"
                f"<td style='text-align:left;color:#b00020'>{html.escape(msg)}</td></tr>"
            )
        return (
            "<div class='ftkit-job-form-static'><b>Job form</b> (a picture of the form: run the notebook in "
            f"JupyterLab to edit the job and save it)<table>{''.join(rows)}</table></div>"
        )
