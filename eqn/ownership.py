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
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from eqn.errors import ConfigError


def umask() -> int:
    """The process's umask (read without changing it for good): eqn's files get 0666/0777 minus it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def process_alive(pid) -> bool:
    """Whether a process with this PID runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LEDGER = Path(".eqn") / "owned.jsonl"
TEMP = ".eqn-tmp-"  # every temporary file or folder eqn makes starts with this and is noted in its folder's ledger
STALE_ELSEWHERE_S = 24 * 3600  # a temporary of a process on another host is taken as stale after a day
_RUN: list[tuple[Path, str]] = []  # the run being written (its dir and id): its files are recorded as that run's


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _append(root: Path, entry: dict) -> None:
    ledger = root / LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    if _RUN and "run" not in entry and not entry.get("temp") and not entry.get("removed"):
        run_dir, run_id = _RUN[-1]
        if (root / entry["path"]).is_relative_to(run_dir):
            entry = {**entry, "run": run_id}
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


def _can_append(root: Path) -> bool:
    ledger = root / LEDGER
    if ledger.exists():
        return os.access(ledger, os.W_OK)
    folder = ledger.parent if ledger.parent.exists() else root
    return os.access(folder, os.W_OK | os.X_OK) if folder.exists() else True


def recording_root(path: str | os.PathLike) -> Path:
    """The folder whose ledger will record `path`: the nearest ledger if eqn can append to it, else a ledger of
    the file's own folder (a shared folder whose ledger belongs to someone else). A ConfigError, before any work,
    when neither can be written."""
    path = Path(os.path.abspath(path))
    root = ledger_root(path)
    if _can_append(root):
        return root
    parent = path.parent
    if parent != root and not (parent / LEDGER).exists() and _can_append(parent):
        return parent
    raise ConfigError(
        f"{path}: eqn cannot record that it wrote this file: {root / LEDGER} is not writable; "
        "choose another output folder"
    )


def is_temp(path: str | os.PathLike) -> bool:
    """An eqn temporary: the name pattern, and its folder's ledger notes it as one."""
    path = Path(os.path.abspath(path))
    if not path.name.startswith(TEMP):
        return False
    return _temp_entry(path) is not None


def _temp_entry(path: Path) -> dict | None:
    for folder in path.parents:
        if (folder / LEDGER).is_file():
            entry = _last(folder, path)
            if entry is not None:
                return entry if entry.get("temp") else None
    return None


def make_temp(folder: str | os.PathLike, name: str, directory: bool = False) -> Path:
    """A new temporary file (empty) or folder in `folder`, named and recorded as eqn's (stale ones of dead
    processes there are removed first)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_temps(folder)
    path = Path(os.path.abspath(folder / f"{TEMP}{os.getpid()}-{secrets.token_hex(4)}-{name}"[:255]))
    root = recording_root(path)
    _append(
        root,
        {
            "path": path.relative_to(root).as_posix(),
            "temp": True,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
        },
    )
    if directory:
        path.mkdir()
    else:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def drop_temp(path: str | os.PathLike) -> None:
    """Remove a temporary eqn made (file or folder, if still there) and note it gone."""
    path = Path(os.path.abspath(path))
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    try:
        root = ledger_root(path)
        _append(root, {"path": path.relative_to(root).as_posix(), "removed": True})
        _drop_temp_only_ledger(root)
    except OSError:
        pass


def _drop_temp_only_ledger(root: Path) -> None:
    """A ledger that only ever noted temporaries, all gone now, says nothing: remove it (a failed command leaves
    the folder as it found it)."""
    ledger = root / LEDGER
    live: set[str] = set()
    for line in ledger.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            name = entry["path"]
        except (ValueError, KeyError, TypeError):
            return
        if not Path(name).name.startswith(TEMP):
            return
        if entry.get("temp"):
            live.add(name)
        elif entry.get("removed"):
            live.discard(name)
        else:
            return
    if not live:
        ledger.unlink(missing_ok=True)
        try:
            ledger.parent.rmdir()
        except OSError:
            pass


def clean_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporaries that killed eqn processes left in `folder` (and below, if recursive): only names of
    eqn's pattern that its ledger notes as temporaries of a process now gone."""

    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(f"{TEMP}*") if recursive else folder.glob(f"{TEMP}*")
    removed = []
    for path in sorted(candidates):
        entry = _temp_entry(Path(os.path.abspath(path)))
        if entry is None:
            continue
        mine = entry.get("host") == socket.gethostname()
        stale = (
            (not process_alive(entry.get("pid")))
            if mine
            else time.time() - float(entry.get("time") or 0) > STALE_ELSEWHERE_S
        )
        if stale and (path.exists() or path.is_symlink()):
            drop_temp(path)
            removed.append(path)
    return removed


@contextmanager
def writing_run(run_dir: str | os.PathLike, run_id: str) -> Iterator[None]:
    """While a run writes its run dir, the files eqn records under it are recorded as that run's."""
    _RUN.append((Path(os.path.abspath(run_dir)), run_id))
    try:
        yield
    finally:
        _RUN.pop()


def record(path: str | os.PathLike, root: Path | None = None, **about) -> None:
    """Note that eqn has just written `path` (a file); `about`: what made it (kept in its ledger line)."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root)) if root is not None else recording_root(path)
    content = Path(about.pop("content", path))  # a temporary about to be renamed onto `path`
    _append(
        root,
        {**about, "path": path.relative_to(root).as_posix(), "size": content.stat().st_size, "sha256": sha256(content)},
    )


def record_tree(folder: str | os.PathLike, root: Path | None = None) -> None:
    """Note every file under `folder` (outside .eqn/) as eqn's, in the ledger of `root` (default: the nearest)."""
    folder = Path(folder)
    for path in sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and ".eqn" not in p.relative_to(folder).parts
        and not any(part.startswith(TEMP) for part in p.relative_to(folder).parts)
    ):
        record(path, root)


def record_dirs(folder: Path, root: Path) -> None:
    """Note every sub-folder of `folder` as one eqn made (an empty folder of eqn's is then told from a user's)."""
    for path in sorted(
        p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink() and ".eqn" not in p.relative_to(folder).parts
    ):
        _append(root, {"path": path.relative_to(root).as_posix(), "dir": True})


def new_folder(folder: Path) -> None:
    """A folder eqn made in full (temporary, then renamed into place): its own ledger, the umask's permissions."""

    record_tree(folder, folder)
    record_dirs(folder, folder)
    (folder / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    (folder / LEDGER).touch()
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o777 & ~umask())
        elif not path.is_symlink():
            os.chmod(path, 0o666 & ~umask())


def replace_folder(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder onto `out`, which must be absent or eqn's own, by renames: the old folder
    aside, the new one in, then the old one removed; on any failure the old folder is put back. Every entry of the
    old folder (files, folders, links) is checked before anything moves."""
    from eqn.interrupt import fault_point

    new_folder(tmp)
    fault_point(f"folder:{Path(out).name}")  # the finished temporary folder exists, the output not yet
    out = Path(os.path.abspath(out))
    if not (out.exists() or out.is_symlink()):
        _rename_new(tmp, out)
        drop_temp_record(tmp)
        return
    if not owns_folder(out):
        raise ConfigError(
            f"{out}: exists and holds files or folders eqn did not write; eqn never replaces them: "
            "move them away or choose another output"
        )
    aside = make_temp(out.parent, out.name + ".old", directory=True)
    aside.rmdir()
    os.rename(out, aside)
    try:
        if not owns_folder(aside):  # changed between the check and the move
            raise ConfigError(f"{out}: changed while eqn was replacing it; it was left as it was")
        _rename_new(tmp, out)
    except BaseException:
        if not (out.exists() or out.is_symlink()):
            os.rename(aside, out)
            drop_temp_record(aside)
        raise
    drop_temp_record(tmp)
    drop_temp(aside)


def _rename_new(tmp: Path, out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise ConfigError(f"{out}: appeared while eqn was writing it; eqn never replaces it (nothing was written)")
    try:
        os.rename(tmp, out)
    except OSError as err:
        raise ConfigError(
            f"{out}: appeared while eqn was writing it ({err.strerror}); eqn never replaces it (nothing was written)"
        ) from None


def drop_temp_record(path: Path) -> None:
    """A temporary renamed into place: its ledger note as a temporary is closed."""
    path = Path(os.path.abspath(path))
    try:
        root = ledger_root(path)
        if _temp_entry(path) is not None:
            _append(root, {"path": path.relative_to(root).as_posix(), "removed": True})
            _drop_temp_only_ledger(root)
    except OSError:
        pass


def install_file(tmp: Path, path: Path, replaces: str | None, **about) -> None:
    """Put the finished temporary file `tmp` at `path`, recorded as eqn's, without ever replacing a file eqn may
    not replace: `replaces` is the SHA-256 of the eqn file that was at `path` when the work began (None: there was
    none). A file that appeared since, or one that changed, is kept and this write refused. The ledger line is
    written just before the rename, so a kill between the two leaves a file the ledger still names."""
    path = Path(os.path.abspath(path))

    def refuse(what: str) -> ConfigError:
        present = owned_entry(path)
        root = ledger_root(path)
        _append(root, dict(present) if present else {"path": path.relative_to(root).as_posix(), "removed": True})
        return ConfigError(
            f"{path}: {what} while eqn was writing it; eqn never replaces it (nothing was written): "
            "move it away or choose another output"
        )

    if path.exists() or path.is_symlink():
        entry = owned_entry(path)
        if replaces is None or entry is None or entry.get("sha256") != replaces:
            raise ConfigError(
                f"{path}: {'appeared' if replaces is None else 'changed'} while eqn was writing it; "
                "eqn never replaces it (nothing was written): move it away or choose another output"
            )
        record(path, content=tmp, **about)
        os.replace(tmp, path)
        return
    record(path, content=tmp, **about)
    try:
        os.link(tmp, path)  # fails if the name exists: a file that appeared this instant is never replaced
    except FileExistsError:
        raise refuse("appeared") from None
    except OSError:  # no hard links on this filesystem
        if path.exists() or path.is_symlink():
            raise refuse("appeared") from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def forget(path: Path) -> None:
    path = Path(os.path.abspath(path))
    root = ledger_root(path)
    _append(root, {"path": path.relative_to(root).as_posix(), "removed": True})


_cache: dict[Path, tuple[tuple, dict]] = {}


def _entries(root: Path) -> dict[str, list[dict]]:
    """Per path, its last two ledger lines (a write is noted just before its rename: if eqn is killed between the
    two, the file still holds the content of the line before)."""
    ledger = root / LEDGER
    stat = ledger.stat()
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = _cache.get(ledger)
    if cached and cached[0] == key:
        return cached[1]
    entries: dict[str, list[dict]] = {}
    for line in ledger.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            kept = entries.setdefault(entry["path"], [])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn or foreign line proves nothing
        kept.append(entry)
        del kept[:-2]
    _cache[ledger] = (key, entries)
    return entries


def _last(root: Path, path: Path) -> dict | None:
    kept = _entries(root).get(path.relative_to(root).as_posix())
    return kept[-1] if kept else None


def _is_file_entry(entry: dict) -> bool:
    return not (entry.get("removed") or entry.get("temp") or entry.get("dir"))


def owned_entry(path: str | os.PathLike) -> dict | None:
    """The ledger line that proves `path` is eqn's (it names the file with exactly its present content), or None."""
    path = Path(os.path.abspath(path))
    if not path.is_file() or path.is_symlink():
        return None
    for folder in path.parents:
        if (folder / LEDGER).is_file():
            kept = _entries(folder).get(path.relative_to(folder).as_posix())
            if not kept or kept[-1].get("removed"):
                continue  # an outer ledger may still speak for it
            candidates = [e for e in kept if _is_file_entry(e)]
            if not candidates:
                return None
            size, digest = path.stat().st_size, None
            for entry in reversed(candidates):
                if entry.get("size") == size:
                    digest = digest or sha256(path)
                    if entry.get("sha256") == digest:
                        return entry
            return None
    return None


def owns_file(path: str | os.PathLike) -> bool:
    """True when a ledger names this file with exactly its present content."""
    return owned_entry(path) is not None


def owns_folder(folder: str | os.PathLike) -> bool:
    """True for a folder with its own ledger whose every entry is eqn's: each file unchanged since eqn wrote it,
    each sub-folder made by eqn (or holding eqn's files), no links; eqn's temporaries aside."""
    folder = Path(folder)
    if not (folder / LEDGER).is_file() or folder.is_symlink():
        return False
    return not foreign_entries(folder)


def foreign_entries(folder: Path) -> list[Path]:
    """The entries under `folder` that are not eqn's (files changed or unrecorded, links, sub-folders eqn did not
    make); its ledger folder and eqn's temporaries are skipped."""
    folder = Path(os.path.abspath(folder))
    foreign: list[Path] = []
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        dirs[:] = [d for d in dirs if d != ".eqn" and not is_temp(base / d)]
        for name in files:
            path = base / name
            if not is_temp(path) and not owns_file(path):
                foreign.append(path)
        for name in dirs:
            path = base / name
            if path.is_symlink() or not (_dir_recorded(path) or _holds_owned(path)):
                foreign.append(path)
    return foreign


def _dir_recorded(path: Path) -> bool:
    for folder in path.parents:
        if (folder / LEDGER).is_file():
            entry = _last(folder, path)
            if entry is not None and entry.get("dir"):
                return True
    return False


def _holds_owned(path: Path) -> bool:
    return any(owns_file(p) for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def changed_entries(folder: Path) -> list[Path]:
    """Files under `folder` that a ledger names as eqn's but whose content changed since: the user's now."""
    changed = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and ".eqn" not in p.parts):
        apath = Path(os.path.abspath(path))
        for root in apath.parents:
            if (root / LEDGER).is_file():
                entry = _last(root, apath)
                if entry is None or not _is_file_entry(entry):
                    continue
                if owned_entry(apath) is None:
                    changed.append(path)
                break
    return changed


def remove_owned(target: Path, run: str | None = None) -> list[Path]:
    """Delete eqn's own files at or under `target` (with `run`: only those recorded by that run), eqn's stale
    temporaries there, and the folders this leaves empty (a folder holding only its ledger counts as empty);
    everything else stays."""
    target = Path(target)
    cleaned = clean_temps(target, recursive=True) if target.is_dir() else []
    files = (
        [target]
        if target.is_file()
        else [p for p in target.rglob("*") if p.is_file() and ".eqn" not in p.relative_to(target).parts]
    )
    removed = []
    for path in files:
        entry = owned_entry(path)
        if entry is not None and (run is None or entry.get("run") == run):
            path.unlink()
            forget(path)
            removed.append(path)
    emptied = {q for p in [*removed, *cleaned] for q in Path(p).parents if q == target or q.is_relative_to(target)}
    for folder in sorted(emptied, key=lambda q: -len(q.parts)):
        if folder.is_dir() and not folder.is_symlink() and _only_ledger(folder):
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


def check_output(
    out: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    folder: bool = False,
    option: str = "overwrite=true",
) -> Path:
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
            raise ConfigError(
                f"{out}: exists and was not written by eqn (or was changed since); eqn never replaces "
                "it: choose another output path"
            )
    check_writable(out)
    if not folder:
        recording_root(out)  # eqn can record that it wrote the output (decided now, not after the work)
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
