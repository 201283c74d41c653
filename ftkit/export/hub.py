"""Push an export (a job, or an archive made by ``ftkit export``) to a Hugging Face Hub model repo.

The token comes from the ``token`` argument or huggingface_hub's usual places (``HF_TOKEN``, ``hf auth
login``). It is handed to huggingface_hub only: never written to disk, logged, or shown in an error (messages
are redacted).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from ftkit.errors import TOKEN_PATTERN, FtkitError, redact
from ftkit.export.stage import as_job, stage_export
from ftkit.models.exported import extract_archive, is_archive_path, read_manifest

REACH_TIMEOUT_S = 10.0
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOKEN_HOWTO = (
    "Put the token in HF_TOKEN (or in another variable and pass --token-env NAME), or run `hf auth login`; "
    "never on the command line, where other users of the machine can read it (ps, shell history)"
)


class HubError(FtkitError, RuntimeError):
    """Pushing to the Hub failed: bad arguments, no token, Hub unreachable, or the Hub said no."""


def _redact(text: str, token: str | None) -> str:
    return redact(text, [token] if token else [])


def check_repo_id(repo_id) -> str:
    """A model repo id must read ``namespace/name`` (letters, digits, '-', '_', '.'; no '--' or '..')."""
    if not repo_id:
        raise HubError("no repo id: give one like 'your-user/my-model' (CLI: --repo-id)")
    problems = []
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        problems.append("it must be 'namespace/name' with letters, digits, '-', '_' or '.' in each part")
    elif "--" in repo_id or ".." in repo_id or repo_id.endswith(".git") or len(repo_id) > 96:
        problems.append("'--', '..', a '.git' ending and more than 96 characters are not allowed")
    if problems:
        raise HubError(f"repo id {repo_id!r} is not valid: {'; '.join(problems)} (example: 'your-user/my-model')")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"repo id {repo_id!r} is not valid: {e}") from None
    return repo_id


def resolve_token(token: str | None = None, token_env: str | None = None) -> str:
    """The token to use: ``token``, else the variable ``token_env``, else huggingface_hub's get_token()."""
    if token:
        return token
    if token_env:
        if not _ENV_NAME.match(token_env) or TOKEN_PATTERN.search(token_env):
            # most likely the token itself: say nothing of it (a token in argv is visible to others through ps)
            raise HubError(
                f"no Hugging Face token: --token-env takes the NAME of a variable holding the token. {TOKEN_HOWTO}"
            )
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise HubError(
                f"no Hugging Face token: the environment variable {token_env} is not set or empty. {TOKEN_HOWTO}"
            )
        return value
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise HubError(
            "no Hugging Face token: pass token=..., set HF_TOKEN (or name another variable with "
            "--token-env NAME), or log in with `hf auth login`"
        )
    return found


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def check_reachable(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast (within ``timeout`` s) when the Hub cannot be reached: huggingface_hub's own client waits
    forever.
    """
    if _offline():
        raise HubError(
            f"could not reach the Hugging Face Hub at {endpoint}: offline mode is on (HF_HUB_OFFLINE); unset it to push"
        )
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as e:  # httpx/requests connection errors differ across huggingface_hub versions
        raise HubError(
            f"could not reach the Hugging Face Hub at {endpoint} ({type(e).__name__}: {e}); check "
            "the network connection or HF_ENDPOINT"
        ) from None


def _hub_error(e: Exception, repo_id: str, endpoint: str, token: str) -> HubError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        msg = f"the Hub at {endpoint} rejected the token (401 Unauthorized): check it is valid and has write access"
    elif status == 403:
        msg = (
            f"the token may not create or write {repo_id!r} (403 Forbidden): use your own namespace or a "
            "token with write access to it"
        )
    elif status is not None:
        msg = f"the Hub at {endpoint} answered {status} for {repo_id!r}: {e}"
    else:
        msg = f"could not reach the Hugging Face Hub at {endpoint} ({type(e).__name__}: {e})"
    return HubError(_redact(msg, token))


def push_to_hub(
    job_or_archive,
    repo_id: str,
    token: str | None = None,
    private: bool = True,
    merged: bool = False,
    evaluation=None,
    jobs_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token_env: str | None = None,
    commit_message: str | None = None,
    quiet: bool = False,
    dtype: str | None = None,
) -> str:
    """Upload an export to the Hub model repo ``repo_id`` (created if missing, private unless
    ``private=False``).

    ``job_or_archive`` is a job (Job, id or folder; exported on the fly, ``merged`` as in
    :func:`~ftkit.export.stage.export_job`, in ``dtype``) or an archive written by ``ftkit export``. The token is
    ``token``, else the variable named by ``token_env``, else huggingface_hub's (``HF_TOKEN``, ``hf auth login``).
    ``endpoint`` defaults to ``HF_ENDPOINT`` or huggingface.co. Returns the repo URL. Raises :class:`HubError`
    with a message that never contains the token.
    """

    repo_id = check_repo_id(repo_id)
    token = resolve_token(token, token_env)
    from huggingface_hub import constants

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    is_archive = is_archive_path(job_or_archive) and Path(job_or_archive).is_file()
    if is_archive and (merged or dtype):
        raise HubError(
            f"{job_or_archive} is an archive: it is pushed as it is (merged=True and dtype apply to jobs; "
            "export the job with --merged to push a merged model)"
        )
    job = None
    if not is_archive:
        job = as_job(job_or_archive, jobs_dir)
    check_reachable(endpoint)
    # staged beside the job or archive: a merged model can be far larger than /tmp
    stage_parent = Path(job_or_archive).parent if is_archive else job.path.parent
    try:
        with tempfile.TemporaryDirectory(prefix=".ftkit-push-", dir=stage_parent) as tmp:
            if is_archive:
                folder = extract_archive(job_or_archive, Path(tmp) / "export")
                read_manifest(folder)
            else:
                folder = Path(tmp)
                stage_export(job, folder, merged=merged, evaluation=evaluation, quiet=quiet, dtype=dtype)
            return _upload(folder, repo_id, token, private, endpoint, commit_message, quiet)
    except HubError:
        raise
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "httpx2", "requests", "urllib3"):
            raise _hub_error(e, repo_id, endpoint, token) from None
        raise


def _upload(folder: Path, repo_id: str, token: str, private: bool, endpoint: str, commit_message, quiet: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    manifest = (folder / "ftkit_export.json").read_text(encoding="utf-8")
    kind = json.loads(manifest).get("kind", "model")
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        commit_message=commit_message or f"ftkit export ({kind})",
    )
    if not quiet:
        print(f"ftkit: pushed {kind} to {url}", flush=True)
    return str(url)
