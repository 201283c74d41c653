"""Stage 3, job: what to train, as the service's job body, and where jobs live.

Owns the spec's pydantic models and ``load_job`` (``spec``), the undocumented aliases (``aliases``), checks that span
fields (``checks``), problems in words (``problems``), reading job files in both layouts (``files``), the job's data
files (``datafiles``), writing jobs (``save``) and the job store on disk (``store``).

May import: the base modules, ``ftkit.models`` and ``ftkit.data`` (today it needs only ``ftkit.models``).
"""
