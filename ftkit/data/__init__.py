"""Stage 2, data: prompt/answer CSVs from reading to training tokens.

Owns reading CSVs as the service did (``csvread``), the dataset checks and their report (``checks``, ``report``),
prepared dataset folders (``prepared``), encoding rows through the chat template (``encoding``), token counts
(``tokens``) and PubMedQA (``pubmedqa``).

May import: the base modules and ``ftkit.models``.
"""
