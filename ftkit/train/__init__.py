"""Stage 5, train: running a job.

Owns the rows, step arithmetic and evaluation schedule of a job (``plan``), ftkit's Trainer subclass and the model
and Trainer construction that training and the estimate share (``trainer``), its callback (``callbacks``), stop
signals (``signals``), task metrics at each evaluation (``tasks``), opening or resuming a job (``opening``), the
engine in named phases (``engine``) and the pre-launch estimate (``estimate``, with ``memory``, ``timing`` and
``measure``). ``trainer``, ``callbacks``, ``engine`` and ``measure`` import transformers when they load, so the
command line imports them only when a job trains or steps are timed.

May import: the base modules, ``ftkit.models``, ``ftkit.data``, ``ftkit.job`` and ``ftkit.results`` (the task
metrics score validation rows exactly as ``ftkit evaluate`` does).
"""
