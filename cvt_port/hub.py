"""Publishing a converted folder to the Hugging Face Hub (huggingface_hub does the talking)."""

from __future__ import annotations

from pathlib import Path

from .errors import first_line


class PushError(Exception):
    """The upload failed; the converted folder on disk is complete and untouched (exit status 1)."""

    exit_code = 1


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Create ``repo_id`` if needed and upload every file of ``folder``; returns the repo URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi()
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            commit_message=f"Upload {folder.name} converted with cvt_port (parity verified)",
        )
    except Exception as exc:  # network, auth, offline mode: one line, the folder stays
        raise PushError(
            f"--push-to-hub {repo_id}: upload failed ({type(exc).__name__}: {first_line(exc)}); "
            f"the converted folder is complete at {folder}; log in with `hf auth login` and retry"
        ) from None
    return str(url)
