"""Stage 4, results: what a model does and how training went.

Owns loading a job, export or model for inference and scoring label words (``inference``), evaluation against gold
decisions (``evaluation``), decisions stated after a reasoning (``reasoning``) and the greedy decoder behind them
(``decoding``: rows decoded in slots, a finished row's slot taking the next), the metrics and their result object
(``scores``), generation (``generation``), metric curves and live plots (``plots``; matplotlib loads with it) and
the confusion figure (``figures``).

May import: the base modules, ``ftkit.models``, ``ftkit.data`` and ``ftkit.job``. It comes before ``ftkit.train``
because training scores its validation rows with this stage's label scoring (task metrics); it reads job folders,
never the engine.
"""
