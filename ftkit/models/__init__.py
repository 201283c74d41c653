"""Stage 1, models: what can be fine-tuned or loaded, and how.

Owns the service's model catalog and model references (``catalog``), the bundled CPU model (``bundled``), the
device and precision rules (``device``), loading models, tokenizers and LoRA adapters (``loading``) and reading
export archives back (``exported``).

May import: only ftkit's base modules (``errors``, ``files``, ``paths``, ``version``).
"""
