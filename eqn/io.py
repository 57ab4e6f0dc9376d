"""Atomic file writes and the error type that points at a file and line."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Bad input: the message names the file, the line (or row) and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


class ConfigError(ValueError):
    """A config value that cannot work, or a run directory that holds a different run."""


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, own: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. The file ends with
    the permissions an ordinary open() gives (0666 minus the umask). own=True (outputs): an existing `path` is
    replaced only if eqn wrote it (eqn.ownership), and the new file is recorded as eqn's; own=False: private files
    (caches, scratch)."""
    path = Path(path)
    if own and (path.exists() or path.is_symlink()):
        from eqn.ownership import owns_file

        if not owns_file(path):
            raise ConfigError(f"{path}: exists and was not written by eqn (or was changed since); eqn never "
                              "replaces it: move it away or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if Path(tmp).exists():
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if own:
        from eqn.ownership import record

        record(path)


def write_text(path: str | os.PathLike, text: str, own: bool = True) -> None:
    with atomic_path(path, own) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, own: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n", own)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_tensors(path: str | os.PathLike, tensors: dict, meta: dict | None = None) -> None:
    """Tensors as safetensors (a format that cannot carry code), `meta` as JSON in its header; atomic."""
    import safetensors.torch

    with atomic_path(path) as tmp:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                                    metadata={"eqn": json.dumps(meta or {})})


def load_tensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors, meta) written by save_tensors; a file that is not one is a DataError naming it."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("eqn", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as err:
        raise DataError(path, f"not a readable eqn tensor file ({str(err).splitlines()[0][:200]})") from None


class RunLock:
    """One process per run directory: `<run_dir>/.lock` holds the owner's host and PID. A lock left by a dead
    process on this host is taken over; a live one refuses the second process with a ConfigError."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self.owned = False

    def __enter__(self) -> "RunLock":
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise ConfigError(f"{self.path.parent} is in use by process {owner.get('pid')} on "
                                  f"{owner.get('host')}; wait for it to finish (or, if it is gone, delete "
                                  f"{self.path})") from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.owned = True
            return self
        raise ConfigError(f"could not lock {self.path.parent}")

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def digest(obj: Any, files: list = ()) -> str:
    """SHA-256 of a JSON-able object plus the bytes of some files: the resume fingerprint and the cache key."""
    import hashlib

    h = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode())
    for f in files:
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return h.hexdigest()
