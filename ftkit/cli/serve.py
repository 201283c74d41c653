"""``ftkit serve``: the fine-tuning service's REST API on this machine, with a job queue (see ``ftkit.server``)."""

from __future__ import annotations

import argparse

from ftkit.server.serve import serve


def port(text: str) -> int:
    """A TCP port number, 1..65535 (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (allowed: 1..65535)")
    return value


def _serve(args) -> int:
    serve(args.host, args.port, args.jobs_dir, args.workers, args.log_level)
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="run the service's REST API locally (needs the server extra)")
    s.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1; others need FTKIT_API_TOKEN)")
    s.add_argument("--port", type=port, default=8000, help="port (default 8000)")
    s.add_argument("--jobs-dir", default=None, help="job folders and the server's state (default: runs/)")
    s.add_argument("--workers", type=int, default=None, help="jobs run at a time (default: one per GPU, else 1)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=_serve)
