"""ftkit's version (one place: pyproject.toml's version must equal it; tests/test_packaging.py checks)."""

__version__ = "0.1.0"
