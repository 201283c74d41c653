"""The three contenders of train_throughput.py, each run in its own process, and the evaluation they share.

Every contender trains the bundled SmolLM2-135M-Instruct with the same LoRA config, rows and hyperparameters;
what differs is what each tool does by default. The measurements are taken the same way for all three:
``instrument()`` patches ``transformers.Trainer`` (which all three run on) to count tokens from the actual
training batches and to time the training loop, and ``common_eval`` scores every saved adapter with one
function.
"""

from __future__ import annotations

import gc
import json
import math
import resource
import sys
import time
from pathlib import Path

IGNORE = -100
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}

# Filled in by the instrumented Trainer during training.
STATS = {
    "micro_batches": 0,
    "trained_tokens": 0,
    "real_tokens": 0,
    "processed_tokens": 0,
    "t_train_begin": None,
    "step_ends": [],
    "micro": [],  # per micro-batch: [optimizer step it belongs to (0-based), trained, real tokens, row lengths]
}


def instrument() -> None:
    """Count tokens in every training micro-batch and time the loop, in whichever Trainer subclass runs it.

    Trained tokens are labels that are prediction targets after the one-position shift (``labels[..., 1:] !=
    -100``); real tokens are non-pad tokens (the attention mask's sum, or every token of a padding-free
    batch); processed tokens include padding. The training time runs from ``on_train_begin`` to the last
    optimizer step's ``on_step_end``: an evaluation or final save the Trainer does after that step is not in
    it.
    """
    from transformers import Trainer, TrainerCallback

    from ftkit.train.timing import row_lengths, target_tokens

    class _Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            STATS["t_train_begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            STATS["step_ends"].append(time.perf_counter())

    init, step = Trainer.__init__, Trainer.training_step

    def __init__(self, *a, **kw):
        init(self, *a, **kw)
        # first in line, so it reads the clock before another callback's work at the same event
        self.callback_handler.callbacks.insert(0, _Clock())

    def training_step(self, model, inputs, *a, **kw):
        ids = inputs["input_ids"]
        trained = target_tokens(inputs)
        lengths = row_lengths(inputs)
        STATS["micro_batches"] += 1
        STATS["trained_tokens"] += trained
        STATS["real_tokens"] += sum(lengths)
        STATS["processed_tokens"] += ids.numel()
        STATS["micro"].append([len(STATS["step_ends"]), trained, sum(lengths), lengths])
        return step(self, model, inputs, *a, **kw)

    Trainer.__init__, Trainer.training_step = __init__, training_step


def model_flops(micro: list, shape) -> float:
    """Model FLOPs (ftkit.train.flops, LoRA r 8 on every linear layer) of these micro-batches."""
    from ftkit.train.flops import training_flops

    lengths = [n for m in micro for n in m[3]]
    return training_flops(shape, lengths, sum(m[1] for m in micro), lora_r=LORA["r"]).total


def steady_state(warmup: int) -> dict | None:
    """Time, tokens and model FLOPs of the optimizer steps after the first ``warmup`` (None if too few steps)."""
    ends = STATS["step_ends"]
    if warmup < 1 or len(ends) <= warmup:
        return None
    micro = [m for m in STATS["micro"] if m[0] >= warmup]
    seconds = ends[-1] - ends[warmup - 1]
    trained, real = sum(m[1] for m in micro), sum(m[2] for m in micro)
    return {
        "steps": len(ends) - warmup,
        "s": seconds,
        "trained_tokens": trained,
        "real_tokens": real,
        "trained_tokens_per_s": trained / seconds,
        "real_tokens_per_s": real / seconds,
        "micro": micro,
    }


def read_rows(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df["prompt"].tolist(), df["answer"].tolist()


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        bias="none",
    )


# --- contenders: each returns (adapter folder, its own eval_loss, extra facts for the report) ---


def run_ftkit(cfg: dict, work: Path, precision: str = "auto"):
    """ftkit's engine with a job spec; ``precision`` fp32 for the like-for-like comparison with trl_fp32."""
    from ftkit.train.engine import train

    spec = {
        "name": "bench-ftkit",
        "base_model_id": "bundled",
        "dataset": {"id": cfg["data"], "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "n_epochs": 1,
            "batch_size": cfg["batch_size"],
            "learning_rate": cfg["lr"],
            "mask_prompt_labels": True,
            "lora": {"r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"]},
        },
        "local": {
            "precision": precision,
            "batching": "auto",
            "max_seq_length": cfg["max_length"],
            "max_steps": cfg["max_steps"],
            "device": cfg["device"],
            "seed": 42,
            "output_dir": str(work / "runs"),
        },
    }
    job = train(spec, quiet=True)
    rec = job.record
    engine_trained = max((r["trained_tokens"] or 0 for r in job.metrics()), default=None)
    facts = {
        "precision": rec["precision"],
        "batching": rec["batching"],
        "device": rec["device"],
        "gradient_checkpointing": False,
        "engine_reported_trained_tokens": engine_trained,
        "data_rows": f"{rec['rows']['train']} rows, {rec['rows']['truncated_train']} longer than max length "
        "(prompt shortened, answer kept)",
    }
    return job.model_dir, _finite(rec["result"]["eval_loss"]), facts


def run_ftkit_peft_lora(cfg: dict, work: Path):
    import ftkit.train.trainer

    ftkit.train.trainer.use_lean_lora_forward = lambda model: 0
    return run_ftkit(cfg, work)


def _trl_defaults(args, trainer) -> dict:
    """The SFTConfig settings that decide speed and what is learned, as the trainer ended up using them."""
    keys = (
        "bf16",
        "fp16",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
        "padding_free",
        "packing",
        "packing_strategy",
        "completion_only_loss",
        "assistant_only_loss",
        "loss_type",
        "max_length",
        "truncation_mode",
        "pad_to_multiple_of",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "optim",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "max_grad_norm",
        "logging_steps",
        "save_strategy",
        "save_steps",
        "eval_strategy",
        "dataloader_num_workers",
        "use_liger_kernel",
        "activation_offloading",
        "torch_compile",
    )
    out = {k: getattr(args, k, None) for k in keys}
    out = {k: (v.value if hasattr(v, "value") else v) for k, v in out.items()}
    out["completion_only_loss (as resolved by the trainer)"] = trainer.completion_only_loss
    out["padding_free (as resolved by the trainer)"] = trainer.padding_free
    out["model dtype (loaded by TRL from the path)"] = str(next(trainer.model.parameters()).dtype)
    out["attn_implementation"] = trainer.model.config._attn_implementation
    return out


def _finite(x):
    """A loss, or None where there is none (a trainer reports nan when no batch had a label)."""
    return x if x is not None and math.isfinite(x) else None


def run_trl(cfg: dict, work: Path, bf16: bool | None = None):
    """TRL at its defaults; ``bf16=False`` only for the trl_fp32 contender (CPUs without native bf16)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ftkit.models import bundled

    def conv(path):
        prompts, answers = read_rows(path)
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": p}],
                    "completion": [{"role": "assistant", "content": a}],
                }
                for p, a in zip(prompts, answers, strict=True)
            ]
        )

    args = SFTConfig(
        output_dir=str(work / "trl"),
        learning_rate=cfg["lr"],
        per_device_train_batch_size=cfg["batch_size"],
        num_train_epochs=1,
        max_steps=cfg["max_steps"] or -1,
        max_length=cfg["max_length"],
        seed=42,
        report_to="none",
        use_cpu=cfg["device"] == "cpu",
        **({} if bf16 is None else {"bf16": bf16}),
    )
    n_rows = len(read_rows(Path(cfg["data"]) / "train.csv")[1])
    trainer = SFTTrainer(
        model=str(bundled.ensure()),
        args=args,
        train_dataset=conv(Path(cfg["data"]) / "train.csv"),
        eval_dataset=conv(Path(cfg["data"]) / "validation.csv"),
        peft_config=_lora_config(),
    )
    defaults = _trl_defaults(trainer.args, trainer)
    trainer.train()
    own = _finite(trainer.evaluate().get("eval_loss"))
    out = work / "trl-adapter"
    kept = trainer.train_dataset
    cut = sum(1 for ids in kept["input_ids"] if len(ids) >= cfg["max_length"])
    trainer.save_model(str(out))
    facts = {
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32"),
        "batching": "padding_free" if trainer.padding_free else "padded (longest in batch)",
        "device": str(args.device),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "trl_defaults": defaults,
        "data_rows": f"{len(kept)} of {n_rows} rows kept (rows left without a completion token dropped), "
        f"{cut} cut at max length (end cut: answer shortened)",
    }
    del trainer
    return out, own, facts


def _plain_dataset(tok, path: Path, max_length: int):
    """The common tutorial recipe: chat-template text padded to max_length; prompt and padding labelled "
    "-100."""
    from datasets import Dataset

    prompts, answers = read_rows(path)
    rows, cut, empty = [], 0, 0
    for p, a in zip(prompts, answers, strict=True):
        user = [{"role": "user", "content": p}]
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": a}], tokenize=False)
        head = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        enc = tok(full, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=False)
        n_prompt = len(tok(head, add_special_tokens=False)["input_ids"])
        labels = [
            IGNORE if i < n_prompt or m == 0 else t
            for i, (t, m) in enumerate(zip(enc["input_ids"], enc["attention_mask"], strict=True))
        ]
        rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
        cut += len(tok(full, add_special_tokens=False)["input_ids"]) > max_length
        empty += all(t == IGNORE for t in labels)
    return Dataset.from_list(rows), cut, empty


def run_plain(cfg: dict, work: Path):
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from ftkit.models import bundled

    path = str(bundled.ensure())
    tok = AutoTokenizer.from_pretrained(path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), _lora_config())
    # bf16 only where ftkit's auto precision picks it (CUDA): this contender differs from ftkit in batching
    bf16 = cfg["device"] == "cuda" and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(work / "plain"),
        learning_rate=cfg["lr"],
        per_device_train_batch_size=cfg["batch_size"],
        num_train_epochs=1,
        max_steps=cfg["max_steps"] or -1,
        seed=42,
        report_to="none",
        bf16=bf16,
        use_cpu=cfg["device"] == "cpu",
    )
    train_ds, cut, empty = _plain_dataset(tok, Path(cfg["data"]) / "train.csv", cfg["max_length"])
    eval_ds, _, _ = _plain_dataset(tok, Path(cfg["data"]) / "validation.csv", cfg["max_length"])
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=default_data_collator,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
    )
    trainer.train()
    own = _finite(trainer.evaluate().get("eval_loss"))
    out = work / "plain-adapter"
    trainer.save_model(str(out))
    facts = {
        "precision": "bf16" if bf16 else "fp32",
        "batching": f"padded to max_length {cfg['max_length']}",
        "device": str(args.device),
        "gradient_checkpointing": False,
        "data_rows": f"{len(train_ds)} rows, {cut} longer than max length (end cut: answer shortened), "
        f"{empty} of them without any label left",
    }
    del trainer
    return out, own, facts


CONTENDERS = {
    "ftkit": run_ftkit,
    # ftkit in fp32 whatever the CPU: like for like with trl_fp32 and plain where ftkit's auto picks bf16
    "ftkit_fp32": lambda cfg, work: run_ftkit(cfg, work, precision="fp32"),
    # ftkit with peft's own LoRA forward instead of ftkit.models.lora_forward's: what the lean forward gains
    "ftkit_peft_lora": lambda cfg, work: run_ftkit_peft_lora(cfg, work),
    "trl": run_trl,
    "plain": run_plain,
    # TRL's defaults but fp32: on a CPU without native bf16, shows what TRL's default bf16 costs there
    "trl_fp32": lambda cfg, work: run_trl(cfg, work, bf16=False),
}


def common_eval(adapter_dir: Path, data_dir: Path, max_length: int, device: str) -> dict:
    """Mean next-token NLL of the answer tokens (EOS included) of the validation rows, one row at a time, in
    fp32.

    Rows are encoded with ftkit's chat-template encoding and prompt masking, the same for every contender, so
    the numbers compare the trained adapters and nothing else.
    """
    import torch
    from peft import PeftModel

    from ftkit.data.encoding import encode_rows
    from ftkit.models.loading import load_model

    model, tok, _ = load_model("bundled", device=device, dtype="fp32")
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    prompts, answers = read_rows(data_dir / "validation.csv")
    enc = encode_rows(tok, prompts, answers, max_length, mask_prompt=True)
    nll, n = 0.0, 0
    with torch.inference_mode():
        for e in enc.examples:
            ids = torch.tensor([e["input_ids"]], device=device)
            target = torch.tensor(e["labels"][1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum"))
            n += int((target != IGNORE).sum())
    return {"eval_loss": nll / n, "rows": len(enc.examples), "tokens": n}


def base_params() -> int:
    """Parameters of the base model (SmolLM2 ties its embedding to the LM head, so each counts once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftkit.models import bundled

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundled.ensure()))
    return sum(p.numel() for p in model.parameters())


def worker(name: str, cfg: dict, result_path: Path, t_start: float) -> int:
    """Run one contender and write its measurements as JSON to ``result_path``."""
    import torch
    from transformers import AutoConfig

    from ftkit.files import write_json
    from ftkit.models import bundled
    from ftkit.train.flops import Shape

    instrument()
    # TRL at its defaults is slow where bf16 is emulated: it may be capped at fewer steps than the others
    cfg = {**cfg, "max_steps": (cfg.get("max_steps_by") or {}).get(name, cfg["max_steps"])}
    work = result_path.parent / f"{result_path.stem}-work"
    adapter, own_eval, facts = CONTENDERS[name](cfg, work)
    wall = time.perf_counter() - t_start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    gc.collect()
    ends, t0 = STATS["step_ends"], STATS["t_train_begin"]
    train_s = ends[-1] - t0
    common = common_eval(Path(adapter), Path(cfg["data"]), cfg["max_length"], cfg["device"])
    total_params = base_params()
    shape = Shape.from_config(AutoConfig.from_pretrained(bundled.ensure()))
    steady = steady_state(cfg.get("warmup_steps") or 0)
    if steady:
        steady["model_flops"] = model_flops(steady.pop("micro"), shape)
        steady["model_gflops"] = steady["model_flops"] / steady["s"] / 1e9
    flops = model_flops(STATS["micro"], shape)
    result = {
        "contender": name,
        "wall_s": wall,
        "train_s": train_s,
        "first_step_s": ends[0] - t0,
        "steps": len(ends),
        "micro_batches": STATS["micro_batches"],
        "trained_tokens": STATS["trained_tokens"],
        "real_tokens": STATS["real_tokens"],
        "processed_tokens": STATS["processed_tokens"],
        "trained_tokens_per_s": STATS["trained_tokens"] / train_s,
        "real_tokens_per_s": STATS["real_tokens"] / train_s,
        "peak_rss_mb": rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20,
        "cuda_peak_allocated_mb": cuda_peak / 2**20 if cuda_peak is not None else None,
        "base_params": total_params,
        "model_flops": flops,
        "model_gflops": flops / train_s / 1e9,
        "steady": steady,
        "step_seconds": [b - a for a, b in zip([t0, *ends], ends, strict=False)],
        "own_eval_loss": own_eval,
        "common_eval": common,
        "torch_threads": torch.get_num_threads(),
        **facts,
    }
    write_json(result_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "trl_defaults"}), flush=True)
    return 0
