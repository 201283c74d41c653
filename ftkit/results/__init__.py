"""Stage 5, results: what a trained model does and how training went.

Owns loading a job, export or model for inference and scoring label words (``inference``), evaluation against
gold decisions (``evaluation``), the metrics and their result object (``scores``), generation (``generation``),
metric curves and live plots (``plots``) and the confusion figure (``figures``). Imports ftkit's base modules,
``ftkit.models``, ``ftkit.data`` and ``ftkit.job``. ``plots`` imports matplotlib when it loads.
"""
