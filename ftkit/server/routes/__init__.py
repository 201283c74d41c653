"""The API's routes, one module per resource: ``models`` (base-models), ``files``, ``datasets``, ``jobs`` (jobs,
metrics, cancel, resume, download, Hub exports) and ``downloads`` (the signed archive links)."""
