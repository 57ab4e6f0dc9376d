"""Everything eqn does with the Hugging Face hub: the offline flags, whether the hub can be reached, whether a model
id can load here, resolving a model source (a local path or a repo id) and uploading a folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from eqn.errors import ConfigError, DataError


def offline_flag() -> str | None:
    """The environment variable that forbids the hub, if one is set."""
    return next(
        (k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k, "").lower() in ("1", "true")), None
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    if offline_flag():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_model_problem(model_id: str) -> str | None:
    """Why a hub model id cannot be loaded on this machine (not a folder, not cached, hub unreachable), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # an id the hub library rejects: let transformers say why
        return None
    if isinstance(cached, str) or hub_reachable():
        return None
    flag = offline_flag()
    why = f"{flag}=1 is set" if flag else "huggingface.co is not reachable from this machine"
    return (
        f"{model_id}: neither a local folder nor in the Hugging Face cache, and {why}; get it with "
        f"`huggingface-cli download {model_id}` on a machine with internet (and copy the cache), or pass a "
        "local folder"
    )


def resolve_model(source: str | Path) -> Path:
    """A local checkpoint/folder as is; otherwise a hub repo id, downloaded with huggingface_hub."""
    path = Path(source)
    if path.exists():
        return path
    if path.is_symlink():
        raise DataError(path, "is a link that leads nowhere (a loop or a missing target)")
    if looks_like_repo_id(str(source)):
        from huggingface_hub import snapshot_download

        problem = hub_model_problem(str(source))
        if problem:
            raise DataError(path, f"not a local checkpoint or folder: {problem.split(': ', 1)[1]}")

        try:
            return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.md"]))
        except Exception as err:
            raise DataError(
                source, f"not a local file or folder, and the hub download failed: {' '.join(str(err).split())[:200]}"
            ) from None
    raise DataError(path, "checkpoint or model folder not found")


def looks_like_repo_id(source: str) -> bool:
    """owner/name, as the hub spells repo ids: one slash, no file suffix, not a path (./x, /x, ~/x, x/y/z)."""
    import re

    return (
        bool(re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}", source))
        and not source.endswith((".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json"))
        and ".." not in source
    )


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, repo_type: str = "model") -> str:
    """Upload a folder with huggingface_hub; offline or refused, one line."""
    from huggingface_hub import HfApi

    flag = offline_flag()
    if flag:
        raise ConfigError(f"push_to_hub={repo_id}: {flag}=1 is set in the environment; unset it to upload")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, ignore_patterns=[".eqn/*"]
        )  # eqn's ledger stays local
    except Exception as err:
        raise ConfigError(f"push_to_hub={repo_id}: upload failed: {' '.join(str(err).split())[:200]}") from None
    return str(getattr(info, "commit_url", repo_id))
