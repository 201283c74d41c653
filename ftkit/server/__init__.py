"""Stage 7, server: the fine-tuning service's REST API on this machine (``ftkit serve``).

Owns the server's state in SQLite (``db``), the bearer token (``auth``), the API's errors (``errors``), turning the
service's job body into a local job (``jobspec``) and a job row into the service's job object (``views``), the job
queue that runs ``python -m ftkit train`` subprocesses (``queue``), export archives and Hub pushes (``exports``), the
FastAPI app (``app``, one module per resource under ``routes``) and starting it (``serve``).

May import: every stage before it (today: the base modules, ``ftkit.models``, ``ftkit.data``, ``ftkit.job``,
``ftkit.train`` for the token estimate and ``ftkit.export``). FastAPI and uvicorn (the ``server`` extra) are imported
only by ``app``, ``routes`` and ``serve``'s ``run``, so ``import ftkit.cli`` works without them.
"""
