"""PubMedQA as prompt/answer CSVs: rows and splits (``rows``), the official PQA-L files (``official``), PQA-A and
PQA-U from the Hugging Face Hub (``hub``), and ``prepare`` choosing between them."""
