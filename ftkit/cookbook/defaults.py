"""The cookbook's job: one table of the values notebook 02 trains with, sized for a 2-core CPU and the bundled
model. :func:`ftkit.cookbook.steps.build_job` starts from it; notebook 02's parameters cell restates the same values
for readers (``tests/test_notebooks.py`` checks that they agree), and its comments say what a GPU user sets instead.
"""

from __future__ import annotations

# notebook parameter -> value; the names are notebook 02's, the meanings the service's fields'
JOB_DEFAULTS: dict = {
    "model": "bundled",  # base_model_id
    "n_epochs": 1,
    "n_evals": 2,
    "batch_size": 4,
    "learning_rate": 0.0005,
    "warmup_ratio": 0.1,
    "weight_decay": 0.0,
    "mask_prompt_labels": True,
    "best_checkpoints": False,
    "lora_enabled": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "trainable_modules": [],  # [] = all linear layers
    "max_seq_length": 256,  # local.max_seq_length
    "micro_batch_size": None,  # local.micro_batch_size: None = batch_size
    "max_steps": None,  # local.max_steps
    "max_train_rows": None,  # local.max_train_rows
    "seed": 42,  # local.seed
}
