"""Write the cookbook notebooks' sources (cells and tags) from this one readable file.

    python scripts/build_notebooks.py          # rewrites notebooks/*.ipynb without outputs
    make notebooks                             # the same, then executes them at their defaults to store outputs

Cell tags: ``parameters`` (papermill), ``nbval-ignore-output`` (outputs that legitimately vary: timings, progress,
widgets, model scores that depend on floating-point details), ``nbval-skip`` (never re-executed by nbval).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
IGNORE = ["nbval-ignore-output"]


def md(text: str):
    return new_markdown_cell(text.strip())


def code(src: str, tags: list[str] | None = None):
    cell = new_code_cell(src.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(src: str):
    return code(src, ["parameters"])


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, NB_DIR / f"{name}.ipynb")


SETUP = "import ftkit\n\npaths = ftkit.cookbook.paths(run_dir{data})\npaths"

write(
    "01_prepare_pubmedqa",
    [
        md("""
# 1 · Prepare PubMedQA

The service's PubMedQA cookbook started by turning PubMedQA into prompt/answer CSV files. This notebook does the same,
locally: it fetches **PQA-L** (1,000 expert-labelled questions; MIT licence) from the official
[pubmedqa/pubmedqa](https://github.com/pubmedqa/pubmedqa) repository (checking its sha256), makes the **official
split** — the 500 test PMIDs of `test_ground_truth.json`, the other 500 split into train/validation stratified by
label — and writes `train.csv`, `validation.csv`, `test.csv` and a `manifest.json`.

Each row is `prompt` (the question and the abstract's labelled sections — by default the results sections only,
which hold the evidence in half the tokens) → `answer`: the abstract's own conclusion, then `Answer: yes|no|maybe`.
Stating the conclusion first is what makes a small model decide from the abstract: trained on the decision word
alone, SmolLM2-135M only learned to say "yes" (see the README's recipe section). Evaluation lets the tuned model
write its conclusion and reads the decision after `Answer:`.

On a CPU the defaults take a stratified subsample so the whole cookbook runs in minutes; set the `max_*` parameters to
`None` for the full split (`ftkit notebooks run --preset full`). Next: [2 · Configure a job](02_configure_job.ipynb).
"""),
        params("""
run_dir = "../out/cookbook"  # str: folder shared by all the notebooks (data, job, runs, plots, eval, exports)
data_dir = None  # str | None: where to write the CSVs; None means <run_dir>/data/pubmedqa
source = None  # str | None: a local ori_pqal.json; None means ftkit cache, ../shared, then download (hash-checked)
seed = 42  # int: seed of the train/validation split and of the subsamples
n_validation = 50  # int: validation rows taken from the 500 non-test examples (the rest train)
answer_style = "reason"  # str: "reason" (conclusion, then "Answer: yes"), "decision", "decision_long" or "long"
context = "results"  # str: "results" (the abstract's results sections, about half the tokens) or "all"; GPU: "all"
max_train = 240  # int | None: stratified subsample of the 450 training rows; GPU: None (all)
max_validation = 20  # int | None: subsample of the 50 validation rows; GPU: None
max_test = 100  # int | None: stratified subsample of the 500 official test rows; GPU: None (all 500)
model = "bundled"  # str: model whose tokenizer counts tokens; GPU: the model you will train, e.g. "Meta-Llama-3.1-8B-Instruct"
"""),
        code(SETUP.format(data=", data_dir")),
        md(
            "## The official split\nSame inputs and seed give byte-identical CSVs; the manifest records hashes and counts."
        ),
        code("""
dataset = ftkit.prepare_pubmedqa(paths.data, source=source, seed=seed, n_validation=n_validation,
                                 answer_style=answer_style, context=context, max_train=max_train,
                                 max_validation=max_validation, max_test=max_test)
dataset
"""),
        md(
            "## Dataset checks\nThe checks every CSV gets before training: structure, columns, empty answers, duplicates, "
            "leakage between splits, and — with a tokenizer — rows longer than the model's context."
        ),
        code("report = ftkit.check_dataset(dataset.train, dataset.validation, tokenizer=model)\nreport"),
        md("## Token lengths\nTokens per row after the model's chat template, as training sees them."),
        code("ftkit.cookbook.plot_token_lengths(paths.data, model=model, out=paths.plots / 'token_lengths.png')"),
        md("## A few rows"),
        code("ftkit.cookbook.show_rows(dataset.train, n=3)"),
    ],
)

write(
    "02_configure_job",
    [
        md("""
# 2 · Configure a fine-tuning job

A job here is the service's job body — `name`, `base_model_id`, `dataset`, `hyperparameters` with the same field names,
defaults and ranges — plus an optional `local` section for settings that only matter on your machine. ftkit checks
it better than the service did: every problem at once, each naming the field, the value and what is allowed.

This notebook picks a model from the catalog, builds the job from the parameters below, shows what a bad job looks
like, estimates tokens, time and memory by timing real steps on this machine, shows which tokens of one example are
trained, and saves `job.json`. Interactive users can use the form instead. Previous: [1 · Prepare](01_prepare_pubmedqa.ipynb) ·
next: [3 · Train](03_train_local.ipynb).
"""),
        params("""
run_dir = "../out/cookbook"  # str: the folder shared by the notebooks
data_dir = None  # str | None: prepared PubMedQA folder; None means <run_dir>/data/pubmedqa
model = "bundled"  # str: catalog name/UUID, HF repo id or folder; GPU: "Meta-Llama-3.1-8B-Instruct"
job_name = "pubmedqa-lora"  # str: the job's name (also its id: re-running it resumes)
n_epochs = 1  # int 1..20: passes over the training rows; GPU: 3
n_evals = 2  # int 0..100: evaluations spread over training (each also scores the validation decisions); GPU: 6
batch_size = 8  # int: effective batch (catalog models: 4..32 step 4)
learning_rate = 0.0005  # float 1e-8..1e-2: peak learning rate; --preset full (114 steps): 0.0003; GPU (8B LoRA): 0.0001
warmup_ratio = 0.05  # float 0..1: share of steps with linear warm-up
mask_prompt_labels = True  # bool: train on answer tokens only
best_checkpoints = True  # bool: keep the checkpoint with the best validation metric (best_metric)
lora_r = 16  # int 1..64: LoRA rank
lora_alpha = 32  # int 1..64: LoRA scaling (update x alpha/r)
lora_dropout = 0.0  # float 0..<1: dropout on the LoRA branch (costs ~2x per step on a CPU)
max_seq_length = 512  # int | None: longer rows get their prompt shortened (reported); GPU: 1024
label_marker = "Answer:"  # str | None: the answer's decision follows this text (reason-style answers); None: first word
best_metric = "eval_macro_f1"  # str: eval_loss, eval_accuracy, eval_macro_f1 or eval_auc: what best_checkpoints keeps
micro_batch_size = None  # int | None: rows per forward pass, gradient accumulation keeps batch_size; GPU: None
max_steps = None  # int | None: cap on optimizer steps for a quick run; GPU: None
measure_estimate = True  # bool: time real training steps for the estimate
estimate_steps = 1  # int: optimizer steps to time after one warm-up step; GPU: 3
"""),
        code(SETUP.format(data=", data_dir")),
        md(
            "## Base models\nThe service's ten models with their API ids, plus the bundled CPU model. Any Hugging Face repo "
            "id or local model folder works too."
        ),
        code("ftkit.catalog_table()"),
        md("## The job"),
        code("""
spec = ftkit.cookbook.build_job(run_dir, job_name, model=model, n_epochs=n_epochs, n_evals=n_evals,
                                batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=warmup_ratio,
                                mask_prompt_labels=mask_prompt_labels, best_checkpoints=best_checkpoints,
                                lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                max_seq_length=max_seq_length, label_marker=label_marker, best_metric=best_metric,
                                micro_batch_size=micro_batch_size, max_steps=max_steps, data_dir=data_dir)
ftkit.cookbook.show_json(spec.to_service_dict())
"""),
        md("## What a bad job looks like\nEvery problem at once, each with its field path, value and what is allowed."),
        code("""
print(ftkit.cookbook.validation_messages({
    "name": "bad", "base_model_id": "Meta-Llama-3.1-8B-Instrukt",
    "dataset": {"id": "missing.csv", "answer_column": "answer"},
    "hyperparameters": {"n_epochs": 0, "batch_size": 5, "learning_rate": 0.5, "lora": {"r": 128, "dropuot": 0.1}},
}))
"""),
        md(
            "## Before launch: tokens, time, memory\nTokens are counted with the model's own tokenizer and chat template. "
            "The time is measured by running real training steps here, not guessed."
        ),
        code("ftkit.estimate(spec, measure=measure_estimate, steps=estimate_steps)", IGNORE),
        md(
            "## Which tokens are trained\nGreen tokens contribute to the loss. With `mask_prompt_labels` the prompt is "
            "grey; the end-of-turn token after the answer is always trained, so the model learns to stop."
        ),
        code("ftkit.cookbook.preview_example(spec)"),
        md(
            "## The form\nIn JupyterLab this form edits the same job: problems show beside their fields as you type; "
            "**Estimate** runs beside the kernel (with progress and Stop), **Show a training example** cuts the row "
            "as the job will, and **Save job** writes `<run_dir>/job.json`, the file notebook 3 trains. Under "
            "papermill there is no one to click: the parameters above define the job."
        ),
        code(
            "form = ftkit.JobForm(spec, save_path=paths.job_file, estimate_steps=estimate_steps)\nform",
            IGNORE,
        ),
        md(
            "## Save\nWrites the parameters' job to `<run_dir>/job.json` — unless the form saved one there, which "
            "then stays (run this cell again after **Save job**: the form's job is kept, not overwritten)."
        ),
        code("spec = ftkit.cookbook.save_or_keep_job(spec, paths.job_file, form)"),
    ],
)

write(
    "03_train_local",
    [
        md("""
# 3 · Train locally

Runs the job from notebook 2 with the transformers `Trainer` and a peft LoRA adapter, on the GPU if there is one, else
on the CPU. The loss curve redraws in place as training goes; `metrics.jsonl` gets one line per step (train_loss,
eval_loss, perplexity, learning rate, tokens, tokens/s). Interrupt the kernel to stop cleanly: a checkpoint is kept and
running this notebook again resumes from it. Previous: [2 · Configure](02_configure_job.ipynb) · next: [4 · Plots](04_plot_metrics.ipynb).
"""),
        params("""
run_dir = "../out/cookbook"  # str: the folder shared by the notebooks
data_dir = None  # str | None: unused here; accepted so sweeps can pass one value to every notebook
fresh = False  # bool: True discards an earlier job of the same name instead of resuming it
live_every = 2  # int: redraw the live plot every this many metric records
"""),
        code(SETUP.format(data="")),
        code(
            "live = ftkit.LivePlot(every=live_every)\njob = ftkit.run_job(paths.job_file, fresh=fresh, on_record=live)",
            IGNORE,
        ),
        md("## Status and last metrics"),
        code("ftkit.jobs_table(paths.jobs)[['id', 'name', 'status', 'model', 'step']]"),
        code("ftkit.cookbook.last_metrics(job)", IGNORE),
    ],
)

write(
    "04_plot_metrics",
    [
        md("""
# 4 · Metric curves

train_loss and eval_loss against optimizer steps (epochs on the top axis), perplexity and learning rate — for one job,
and for several overlaid (labelled by job name) to compare runs. Previous: [3 · Train](03_train_local.ipynb) · next:
[5 · Export and evaluate](05_export_and_evaluate.ipynb).
"""),
        params("""
run_dir = "../out/cookbook"  # str: the folder shared by the notebooks
data_dir = None  # str | None: unused here (sweeps pass it to every notebook)
jobs = None  # list[str] | None: job ids or folders to compare; None means every job in <run_dir>/runs
"""),
        code(SETUP.format(data="")),
        code("ftkit.cookbook.job_ids(paths.jobs, jobs)"),
        md("## One job"),
        code(
            "ftkit.plot_metrics(ftkit.cookbook.job_ids(paths.jobs, jobs)[:1], jobs_dir=paths.jobs, "
            "out=paths.plots / 'metrics.png')",
            IGNORE,
        ),
        md(
            "## Several jobs overlaid\nWith one job this is the same curve; after a sweep (`ftkit notebooks sweep`) or a "
            "second run with another `job_name`, each job gets its own line."
        ),
        code(
            "ftkit.plot_metrics(ftkit.cookbook.job_ids(paths.jobs, jobs), jobs_dir=paths.jobs, "
            "out=paths.plots / 'compare.png')",
            IGNORE,
        ),
    ],
)

write(
    "05_export_and_evaluate",
    [
        md("""
# 5 · Evaluate, try, export

Did fine-tuning make the model better at the task — not just lower the loss? This notebook scores the base model and
the tuned one on the same PubMedQA test rows, side by side with the majority-class baseline, and flags a model that
collapses to one answer. The base model answers at once (the next-token scores of "yes", "no", "maybe" after the
prompt); the tuned one first writes the conclusion it was trained to state, then its decision is read after
`Answer:`. Then it shows a few answers, and exports the result as the service did: a `.tar.gz` with the adapter (or
the merged model), tokenizer, job, metrics and a model card — optionally pushed to the Hugging Face Hub. Previous:
[4 · Plots](04_plot_metrics.ipynb).
"""),
        params("""
run_dir = "../out/cookbook"  # str: the folder shared by the notebooks
data_dir = None  # str | None: prepared PubMedQA folder; None means <run_dir>/data/pubmedqa
job_id = "pubmedqa-lora"  # str: the job to evaluate and export (notebook 2's job_name)
eval_limit = None  # int | None: score only the first N test rows; None means the whole test.csv
tuned_method = "reason"  # str: how the tuned model decides: "reason" (conclusion, then Answer:) or "score" (first token)
n_examples = 3  # int: test questions to answer with the tuned model
export_merged = True  # bool: also export the LoRA merged into a full-precision copy of the base model
hub_repo_id = ""  # str: "user/name" to push the adapter to the Hugging Face Hub (needs $HF_TOKEN); "" means skip
"""),
        code(SETUP.format(data=", data_dir")),
        code("job = ftkit.get_job(job_id, paths.jobs)\njob", IGNORE),  # its final losses vary run to run (bf16 on CPU)
        md(
            "## Base vs tuned on PubMedQA\nAccuracy, macro-F1, the yes-vs-no AUC (how well the scores rank yes above "
            "no; 0.5 is chance), per-label F1 and predicted shares on the same rows; `collapsed` marks a model that "
            "gives one answer to (nearly) everything. `ftkit demo` ends by printing this table."
        ),
        code(
            """
table = ftkit.compare({"base": job.record["spec"]["base_model_id"], "tuned": str(job.path)},
                      data=paths.data / "test.csv", out_dir=paths.eval, limit=eval_limit,
                      method={"tuned": tuned_method})
table
""",
            IGNORE,
        ),
        code("table.shape, list(table.columns)"),
        md("## Confusion matrix of the tuned model"),
        code("ftkit.cookbook.plot_confusion(table, 'tuned', out=paths.plots / 'confusion.png')", IGNORE),
        md("## Try it"),
        code("ftkit.sample_answers(str(job.path), paths.data / 'test.csv', n=n_examples)", IGNORE),
        md(
            "## Export\nThe adapter archive is small; the merged archive holds a full model that loads without peft "
            "(checked against base + adapter on a probe prompt before packing)."
        ),
        code("ftkit.export_job(job, out=paths.exports / 'adapter.tar.gz').name", IGNORE),
        code(
            "ftkit.cookbook.export_merged(job, paths.exports / 'merged.tar.gz', enabled=export_merged)",
            IGNORE,
        ),
        code("sorted(p.name for p in paths.exports.glob('*.tar.gz'))"),
        md(
            "## Push to the Hugging Face Hub\nSkipped unless `hub_repo_id` is set and `$HF_TOKEN` holds a token. The token "
            "is read from the environment and never written or shown."
        ),
        code("ftkit.cookbook.maybe_push(job, hub_repo_id)"),
    ],
)


def write_api_notebook() -> None:
    """Notebook 6: the cookbook's job through the local API server, as a script for the hosted service sent it."""
    write(
        "06_local_api_server",
        [
            md("""
# 6 · The same job through the local API

Scripts written for the hosted service talked to its REST API: upload CSVs, pair them as a dataset, create a job,
poll it, read its metrics, download the model. `ftkit serve` offers that API on this machine, with the same paths,
bodies and field names, and a queue that runs the jobs one after another. This notebook starts the server in the
background, submits notebook 2's job through ftkit's Python client, polls its status and metrics, downloads the
archive and stops the server. From a terminal: `ftkit serve` and the curl commands of the README.
Previous: [5 · Evaluate and export](05_export_and_evaluate.ipynb).
"""),
            params("""
run_dir = "../out/cookbook"  # str: the folder shared by the notebooks (reads job.json and data/ from notebooks 1-2)
data_dir = None  # str | None: unused here; accepted so sweeps can pass one value to every notebook
api_job_name = "pubmedqa-lora-api"  # str: the name of the job submitted through the API
max_steps = 4  # int | None: cap on optimizer steps so the demo is quick; None: notebook 2's whole job
n_evals = 1  # int | None: evaluations of the API job (each generates the validation answers); None: notebook 2's
poll_seconds = 2  # float: seconds between status checks
"""),
            code(SETUP.format(data="")),
            md(
                "## Start the server\nOn 127.0.0.1 and a free port, with a fresh token it is handed directly (nothing "
                "is printed or written). Its jobs live in `<run_dir>/api/runs`."
            ),
            code('server = ftkit.start_server(paths.run_dir / "api" / "runs")\nserver'),
            code("client = server.client()\n[m['name'] for m in client.base_models()][-2:]"),
            md(
                "## Submit the cookbook's job\nThe training and validation CSVs are uploaded, paired as a dataset, and "
                "the job body of notebook 2 is sent with the dataset's id. The answer carries the estimated tokens."
            ),
            code(
                "created = ftkit.cookbook.submit_job(\n"
                "    client, paths.job_file, name=api_job_name, max_steps=max_steps, n_evals=n_evals\n"
                ")\n"
                "created['estimated_usage']",
                IGNORE,
            ),
            md("## Poll until it ends"),
            code("job = client.jobs.wait(created['id'], poll=poll_seconds)\njob['status'], job['progress']"),
            md("## Metrics\nThe same records as `metrics.jsonl`: train_loss, eval_loss, perplexity, tokens, ..."),
            code("client.jobs.metrics(created['id'])[-2:]", IGNORE),
            md("## Download the model\nThe `.tar.gz` export of the job: adapter, tokenizer, job, metrics, model card."),
            code(
                "archive = client.jobs.download_model(created['id'], paths.run_dir / 'api' / 'model.tar.gz')\n"
                "sorted(p.name for p in ftkit.extract_archive(archive, paths.run_dir / 'api' / 'model').iterdir())",
                IGNORE,
            ),
            md("## Stop the server"),
            code("server.stop()\nserver"),
        ],
    )


write_api_notebook()
print("wrote", ", ".join(sorted(p.name for p in NB_DIR.glob("*.ipynb"))))
