"""Files eqn writes: atomic writes of owned outputs, tensor files, the run lock, digests."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from eqn.errors import ConfigError, DataError  # noqa: F401 (re-exported: eqn.io's callers)
from eqn.ownership import drop_temp_record, install_file, make_temp, owned_entry, process_alive, recording_root, umask


@contextmanager
def atomic_path(path: str | os.PathLike, own: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; put it at `path` only if the block succeeds. The file ends with
    the permissions an ordinary open() gives (0666 minus the umask). own=True (outputs): an existing `path` is
    replaced only if eqn wrote it (eqn.ownership), checked again at the moment of replacing: a file that appears at
    `path` while the block runs, or an eqn file that changes, is never replaced (ConfigError, the temporary
    removed); the new file is recorded as eqn's. own=False: private files (caches, scratch), replaced as they are."""
    path = Path(path)
    replaces = None
    if own:
        if path.exists() or path.is_symlink():
            entry = owned_entry(path)
            if entry is None:
                raise ConfigError(
                    f"{path}: exists and was not written by eqn (or was changed since); eqn never "
                    "replaces it: move it away or choose another output"
                )
            replaces = entry["sha256"]
        path.parent.mkdir(parents=True, exist_ok=True)
        recording_root(path)  # before any work: eqn can record what it writes here
        tmp = make_temp(path.parent, path.name + ".tmp")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".eqn-tmp-{os.getpid()}-", suffix=f"-{path.name}.tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask())
        from eqn.interrupt import fault_point

        fault_point(f"write:{path.name}")  # the finished temporary exists, the output not yet
        if own:
            install_file(tmp, path, replaces)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if own:
            drop_temp_record(tmp)


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
        safetensors.torch.save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"eqn": json.dumps(meta or {})},
        )


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
    """One process per run directory (or shard-merge folder): `<dir>/.lock`, held with an exclusive `flock` for as
    long as the process lives and naming its host and PID. The kernel drops the lock when its process ends however
    it ends — killed, or on another node of a shared filesystem (a SLURM requeue) — so a lock file left behind is
    never stale: the next process takes it. A live holder refuses the second process with a ConfigError, or, with
    `wait` seconds, is waited for (then a ConfigError says who still holds it). On a filesystem without locks
    (flock unsupported), the file alone decides, as before: a dead PID on this host is taken over."""

    def __init__(self, run_dir: str | os.PathLike, wait: float = 0.0):
        self.path = Path(run_dir) / ".lock"
        self.wait = wait
        self.owned = False
        self.fd: int | None = None

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            owner = {}
        return owner if isinstance(owner, dict) else {}

    def _busy(self, waited: bool) -> ConfigError:
        owner = self._owner()
        return ConfigError(
            f"{self.path.parent} is in use by process {owner.get('pid')} on {owner.get('host')}"
            + (f" (still after {self.wait:g} s)" if waited else "")
            + "; wait for it to finish (the lock ends with its process)"
        )

    def __enter__(self) -> "RunLock":
        import fcntl
        import socket
        import time

        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        deadline = time.monotonic() + self.wait
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise self._busy(self.wait > 0) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            except OSError:  # no locks on this filesystem: the file's host and PID decide
                os.close(fd)
                return self._enter_without_flock(me)
            try:  # a finishing holder removes the file: the inode locked must be the one at the path
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, me.encode())
            self.fd, self.owned = fd, True
            return self

    def _enter_without_flock(self, me: str) -> "RunLock":
        import socket

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner.get("host") == socket.gethostname() and not process_alive(owner.get("pid")):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise self._busy(False) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self.owned = True
            return self
        raise ConfigError(f"could not lock {self.path.parent}")

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiter re-opens the path
            if self.fd is not None:
                os.close(self.fd)  # releases the flock
            self.fd, self.owned = None, False


def digest(obj: Any, files: Sequence = ()) -> str:
    """SHA-256 of a JSON-able object plus the bytes of some files: the resume fingerprint and the cache key."""
    import hashlib

    h = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode())
    for f in files:
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return h.hexdigest()
