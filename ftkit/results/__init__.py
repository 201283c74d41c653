"""Stage 5, results: what a trained model does and how training went.

Owns loading a job, export or model for inference and scoring label words (``inference``), evaluation against gold
decisions (``evaluation``), the metrics and their result object (``scores``), generation (``generation``), metric
curves and live plots (``plots``; matplotlib loads with it) and the confusion figure (``figures``).

May import: the base modules, ``ftkit.models``, ``ftkit.data``, ``ftkit.job`` and ``ftkit.train`` (today it needs
no part of ``ftkit.train``: it reads finished job folders).
"""
