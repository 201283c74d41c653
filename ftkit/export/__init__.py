"""Stage 6, export: taking a job's result away.

Owns staging an export folder and packing it (``stage``, ``archive``), merging the adapter into its base with a
logit check (``merge``), the model card (``card``) and the Hugging Face Hub push (``hub``).

May import: every stage before it (today it needs the base modules, ``ftkit.models`` and ``ftkit.job``: it reads
finished job folders).
"""
