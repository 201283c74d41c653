"""The cookbook's job: one table of the values notebook 02 trains with, sized for a 2-core CPU and the bundled
model, and the parameter presets of ``ftkit notebooks run --preset``.

The recipe (measured, see README "The PubMedQA recipe"): answers that state the abstract's conclusion before the
decision (``reason``), prompts with the results sections only, LoRA on every linear layer, and the checkpoint with
the best validation macro-F1. Decision-only answers learned the label prior and nothing else.

:func:`ftkit.cookbook.steps.build_job` starts from :data:`JOB_DEFAULTS`; notebook 02's parameters cell restates the
same values for readers (``tests/test_notebooks.py`` checks that they agree), and its comments say what a GPU user
sets instead.
"""

from __future__ import annotations

# notebook parameter -> value; the names are notebook 02's, the meanings the service's fields'
JOB_DEFAULTS: dict = {
    "model": "bundled",  # base_model_id
    "n_epochs": 1,
    "n_evals": 2,
    "batch_size": 8,
    "learning_rate": 0.0005,  # 30 steps: 5e-4 beat 3e-4 on validation macro-F1 (0.429 vs 0.371, README)
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "mask_prompt_labels": True,
    "best_checkpoints": True,
    "lora_enabled": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,  # dropout on the LoRA branch costs ~2x per step on a CPU and did not help here
    "trainable_modules": [],  # [] = all linear layers
    "max_seq_length": 512,  # local.max_seq_length: results-only prompts plus the reasoning fit (6 of 450 shortened)
    "micro_batch_size": None,  # local.micro_batch_size: None = batch_size
    "max_steps": None,  # local.max_steps
    "max_train_rows": None,  # local.max_train_rows
    "seed": 42,  # local.seed
    "label_marker": "Answer:",  # local.label_marker: answers reason first ("<conclusion>\nAnswer: yes")
    "best_metric": "eval_macro_f1",  # local.best_metric: keep the checkpoint with the best validation macro-F1
}

# `ftkit notebooks run --preset NAME`: parameter sets on top of the notebooks' defaults.
PRESETS: dict[str, dict] = {
    # all 450 training rows, the 50 validation rows, the 500 official test rows; two epochs, four evaluations; the
    # longer schedule (114 steps) at the peak rate that reached validation macro-F1 0.44 after 29 of its steps
    "full": {
        "max_train": None,
        "max_validation": None,
        "max_test": None,
        "n_epochs": 2,
        "n_evals": 4,
        "learning_rate": 0.0003,
    },
}
