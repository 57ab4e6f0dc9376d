"""What eqn may replace or delete: only files it can prove it wrote itself, and only when asked.

Every folder eqn writes into keeps a ledger, `.eqn/owned.jsonl`: one JSON line per file eqn wrote there (its path
relative to the folder, size and SHA-256; appended, so concurrent shard jobs can share it). A file is *eqn's own*
when the nearest ledger above it names it with the same content. A folder is eqn's own when it has a ledger of its
own and every file in it is eqn's (an export folder, a dataset folder, a report folder). Output paths are checked
before any work: an existing output is refused unless overwrite=true, and even then unless it is eqn's own; an
output that is an input (any spelling, symlink or hard link), `.`, the home folder, a filesystem root or a parent
of an input is refused outright.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from eqn.io import ConfigError

LEDGER = Path(".eqn") / "owned.jsonl"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _append(root: Path, entry: dict) -> None:
    ledger = root / LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)  # one small O_APPEND write: whole lines even with several writers
    finally:
        os.close(fd)


def ledger_root(path: Path) -> Path:
    """The folder whose ledger speaks for `path`: the nearest ancestor that has one, else the parent folder."""
    path = Path(os.path.abspath(path))
    for folder in path.parents:
        if (folder / LEDGER).is_file():
            return folder
    return path.parent


def record(path: str | os.PathLike, root: Path | None = None, **about) -> None:
    """Note that eqn has just written `path` (a file); `about`: what made it (kept in its ledger line)."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root)) if root is not None else ledger_root(path)
    _append(root, {**about, "path": path.relative_to(root).as_posix(), "size": path.stat().st_size,
                   "sha256": sha256(path)})


def record_tree(folder: str | os.PathLike, root: Path | None = None) -> None:
    """Note every file under `folder` (outside .eqn/) as eqn's, in the ledger of `root` (default: the nearest)."""
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".eqn" not in p.relative_to(folder).parts):
        record(path, root)


def new_folder(folder: Path) -> None:
    """A folder eqn made in full (temporary, then renamed into place): its own ledger, the umask's permissions."""
    from eqn.io import umask

    record_tree(folder, folder)
    (folder / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    (folder / LEDGER).touch()
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o777 & ~umask())
        elif not path.is_symlink():
            os.chmod(path, 0o666 & ~umask())


def replace_folder(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder onto `out`, which must be absent or eqn's own (its files are removed)."""
    new_folder(tmp)
    if out.exists():
        if not owns_folder(out):
            raise ConfigError(f"{out}: exists and holds files eqn did not write; eqn never replaces them: move "
                              "them away or choose another output")
        remove_owned(out)
    os.rename(tmp, out)


def forget(path: Path) -> None:
    path = Path(os.path.abspath(path))
    root = ledger_root(path)
    _append(root, {"path": path.relative_to(root).as_posix(), "removed": True})


_cache: dict[Path, tuple[tuple, dict]] = {}


def _entries(root: Path) -> dict[str, dict]:
    ledger = root / LEDGER
    stat = ledger.stat()
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = _cache.get(ledger)
    if cached and cached[0] == key:
        return cached[1]
    entries: dict[str, dict] = {}
    for line in ledger.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            entries[entry["path"]] = entry
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line proves nothing
    _cache[ledger] = (key, entries)
    return entries


def owned_entry(path: str | os.PathLike) -> dict | None:
    """The ledger line that proves `path` is eqn's (it names the file with exactly its present content), or None."""
    path = Path(os.path.abspath(path))
    if not path.is_file() or path.is_symlink():
        return None
    for folder in path.parents:
        if (folder / LEDGER).is_file():
            entry = _entries(folder).get(path.relative_to(folder).as_posix())
            if entry is None or entry.get("removed"):
                continue  # an outer ledger may still speak for it
            same = entry.get("size") == path.stat().st_size and entry.get("sha256") == sha256(path)
            return entry if same else None
    return None


def owns_file(path: str | os.PathLike) -> bool:
    """True when a ledger names this file with exactly its present content."""
    return owned_entry(path) is not None


def owns_folder(folder: str | os.PathLike) -> bool:
    """True for a folder with its own ledger whose every file is eqn's."""
    folder = Path(folder)
    if not (folder / LEDGER).is_file() or folder.is_symlink():
        return False
    return all(owns_file(p) for p in folder.rglob("*")
               if not p.is_dir() and ".eqn" not in p.relative_to(folder).parts)


def remove_owned(target: Path) -> list[Path]:
    """Delete eqn's own files at or under `target`, and the folders this leaves empty (a folder holding only its
    ledger counts as empty); everything else stays."""
    target = Path(target)
    files = [target] if target.is_file() else [
        p for p in target.rglob("*") if p.is_file() and ".eqn" not in p.relative_to(target).parts]
    removed = []
    for path in files:
        if owns_file(path):
            path.unlink()
            forget(path)
            removed.append(path)
    emptied = {q for p in removed for q in p.parents if q == target or q.is_relative_to(target)}
    for folder in sorted(emptied, key=lambda q: -len(q.parts)):
        if folder.is_dir() and _only_ledger(folder):
            (folder / LEDGER).unlink(missing_ok=True)
            if (folder / ".eqn").is_dir() and not any((folder / ".eqn").iterdir()):
                (folder / ".eqn").rmdir()
            folder.rmdir()
    return removed


def _only_ledger(folder: Path) -> bool:
    inside = list(folder.iterdir())
    if not inside:
        return True
    return [p.name for p in inside] == [".eqn"] and [p.name for p in (folder / ".eqn").iterdir()] == ["owned.jsonl"]


# ------------------------------------------------------------------------------ output checks


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def forbidden_folder(out: Path, inputs: Iterable[str | os.PathLike] = ()) -> str | None:
    """Why `out` may never be an output folder (or None): ., home, a root, a parent of an input or of cwd."""
    real = Path(os.path.realpath(out))
    if real.parent == real:
        return "is a filesystem root"
    if real == Path(os.path.realpath(Path.home())):
        return "is the home folder"
    if Path.cwd().resolve().is_relative_to(real):
        return "is the working directory or one of its parents"
    for given in inputs:
        if given and str(given) != "-" and Path(os.path.realpath(given)).is_relative_to(real):
            return f"holds the input {given}"
    return None


def check_output(out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 folder: bool = False, option: str = "overwrite=true") -> Path:
    """Refuse, in one line, an output that eqn may not write: an input, a forbidden folder, an existing path
    (unless `option` is given and the path is eqn's own), a path under a file, an unwritable folder."""
    out = Path(out)
    for given in inputs:
        if given and str(given) != "-" and Path(given).exists() and out.exists() and _same(out, Path(given)):
            raise ConfigError(f"{out}: is the input {given}; choose another output path")
    if folder:
        why = forbidden_folder(out, inputs)
        if why:
            raise ConfigError(f"{out}: {why}; eqn will not write an output folder there")
    if out.exists() or out.is_symlink():
        kind = "folder" if out.is_dir() else "file"
        if folder != out.is_dir():
            raise ConfigError(f"{out}: exists and is a {kind}; the output must be a {'folder' if folder else 'file'}")
        if not overwrite:
            raise ConfigError(f"{out}: exists; pass {option} to replace it (eqn replaces only what it wrote itself)")
        if not (owns_folder(out) if folder else owns_file(out)):
            raise ConfigError(f"{out}: exists and was not written by eqn (or was changed since); eqn never replaces "
                              "it: choose another output path")
    check_writable(out)
    return out


def check_writable(out: Path) -> None:
    """The nearest existing ancestor of `out` must be a writable folder."""
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{out}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: cannot be written: folder {parent} is not writable")
