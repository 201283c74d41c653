"""Writing a Llama-family Hugging Face model folder as one GGUF file (llama.cpp, Ollama, LM Studio).

The file is written with the ``gguf`` package's writer the way llama.cpp's ``convert_hf_to_gguf.py`` writes a
Llama: tensor names from the published name map (``gguf.get_tensor_name_map``), q/k projections permuted into
llama.cpp's rotary layout, norms in F32, the other weights in F16, BF16 or Q8_0, and the tokenizer (tokens,
token types, merges, BOS/EOS/pad ids, whether BOS is added) and chat template in the metadata. Only what
reloads exactly is written: other architectures, rope scalings and tokenizers are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftkit.export.errors import ExportError
from ftkit.files import atomic_path

GGUF_QUANTS = ("f16", "bf16", "q8_0")
SUPPORTED_TEXT = "llama (Llama, SmolLM2, ...)"
# tokenizer.json pre-tokenizers that llama.cpp and transformers' GGUF loader split the same way, by the name
# llama.cpp gives them in tokenizer.ggml.pre
_PRE_TOKENIZERS = {"gpt2": "plain byte-level (GPT-2)", "llama-bpe": "Llama 3 split"}


def _quant_types(quant: str):
    import gguf

    return {
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }[quant]


def check_quant(quant: str) -> str:
    if quant not in GGUF_QUANTS:
        raise ExportError(f"--quant {quant!r} is not a GGUF type ftkit writes (allowed: {', '.join(GGUF_QUANTS)})")
    return quant


def check_supported(config: dict) -> None:
    """Refuse, naming what is missing, a model whose GGUF would not reload as the same model."""
    arch = config.get("model_type")
    if arch != "llama":
        raise ExportError(f"GGUF export supports {SUPPORTED_TEXT} only; {arch} not supported yet")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise ExportError(
            f"GGUF export supports llama models with default rope only; rope scaling {rope_type!r} "
            "(rope_parameters.rope_type in config.json) not supported yet"
        )


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, for a byte-level BPE tokenizer it can reproduce."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    model, pre = tokenizer_json.get("model") or {}, tokenizer_json.get("pre_tokenizer") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise ExportError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3) only; this "
            f"tokenizer ({model.get('type')}) not supported yet"
        )
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    steps = pre.get("pretokenizers") or []
    if pre.get("type") == "Sequence" and [s.get("type") for s in steps] == ["Split", "ByteLevel"]:
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex == GGUF_PRE_TOKENIZER_SPLITS["llama-bpe"]:
            return "llama-bpe"
    kinds = " + ".join(s.get("type", "?") for s in steps) or pre.get("type")
    raise ExportError(
        f"GGUF export: the tokenizer's pre-tokenizer ({kinds}) not supported yet "
        f"(supported: {', '.join(_PRE_TOKENIZERS.values())})"
    )


def _vocab(tokenizer) -> tuple[list[str], list[int]]:
    """Every token by id with llama.cpp's token type (as convert_hf_to_gguf.py's get_vocab_base does)."""
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _permute(w, n_head: int, n_head_kv: int):
    """llama.cpp's q/k layout: each head's rotary halves interleaved (transformers' GGUF loader undoes it)."""
    n = n_head_kv if n_head_kv != n_head else n_head
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_metadata(writer, config: dict, tokenizer, tokenizer_json: dict, model_dir: Path, name: str, quant: str):
    import gguf

    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or {}
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_file_type(_quant_types(quant)[1])
    tokens, types = _vocab(tokenizer)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    # the ids and flags the tokenizer really uses, not what its config files may leave unsaid
    special.special_token_ids = {
        k: v
        for k, v in {
            "bos": tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id,
            "unk": tokenizer.unk_token_id,
            "pad": tokenizer.pad_token_id,
        }.items()
        if v is not None
    }
    ids = tokenizer("a")["input_ids"]
    special.add_special_token = {
        "bos": tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id,
    }
    special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _add_tensors(writer, model_dir: Path, config: dict, quant: str) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    qtype = _quant_types(quant)[0]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    files = sorted(model_dir.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when there is no output.weight
                base, _, suffix = key.rpartition(".")
                gguf_name = names.get_name(base)
                if gguf_name is None:
                    raise ExportError(f"GGUF export: {file.name} tensor {key!r} has no GGUF name (llama layout)")
                data = f.get_tensor(key).float().numpy()
                if key.endswith("q_proj.weight"):
                    data = _permute(data, n_head, n_head)
                elif key.endswith("k_proj.weight"):
                    data = _permute(data, n_head, n_kv)
                if data.ndim == 1:
                    data, t = data.astype(np.float32), gguf.GGMLQuantizationType.F32
                elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
                    data, t = data.astype(np.float16), gguf.GGMLQuantizationType.F16  # rows Q8_0 cannot block
                else:
                    data, t = gguf.quants.quantize(data, qtype), qtype
                writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=t)


def write_gguf(model_dir: str | Path, out: str | Path, quant: str = "f16", name: str | None = None) -> Path:
    """Write the model folder ``model_dir`` (config.json, safetensors, tokenizer) as the GGUF file ``out``
    (temp file + rename); raises :class:`ExportError` for what GGUF export does not support."""
    import gguf
    from transformers import AutoTokenizer

    model_dir, out = Path(model_dir), Path(out)
    check_quant(quant)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    check_supported(config)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre_tokenizer_name(tokenizer_json)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_metadata(writer, config, tokenizer, tokenizer_json, model_dir, name or out.stem, quant)
        _add_tensors(writer, model_dir, config, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out
