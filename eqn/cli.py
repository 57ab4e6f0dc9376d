"""What every eqn command shares: key=value command lines with strict types (eqn.annotate, eqn.export,
eqn.validate), argparse that errs in one line (eqn.report, eqn.analyze, eqn.data), and `one_line`, which ends a
command on eqn's own errors and unreadable files with one line `prog: problem` and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

from eqn.errors import ConfigError, DataError

TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse(
    argv: list[str],
    prog: str,
    usage: str,
    known: tuple[str, ...],
    required: tuple[str, ...] = (),
    ints: dict[str, int] | None = None,
    bools: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
) -> dict:
    """{key: value} from key=value words; `ints` maps integer keys to their least value. Anything else exits
    with one line naming the word."""
    ints, aliases = ints or {}, aliases or {}
    args: dict = {}
    for item in argv:
        key, sep, value = item.partition("=")
        key = aliases.get(key, key)
        if not sep or not key:
            sys.exit(f"{prog}: expected key=value, got {item!r} ({usage})")
        if key not in known:
            sys.exit(f"{prog}: unknown option {key!r}; valid: {', '.join(known)}")
        if key in args:
            sys.exit(f"{prog}: {key} is given twice")
        if key in ints:
            try:
                number = int(value)
            except ValueError:
                number = None
            if number is None or number < ints[key]:
                sys.exit(f"{prog}: {key}={value!r}: must be a whole number of at least {ints[key]}")
            args[key] = number
        elif key in bools:
            if value.lower() not in TRUE + FALSE:
                sys.exit(f"{prog}: {key}={value!r}: must be true or false")
            args[key] = value.lower() in TRUE
        else:
            args[key] = value
    missing = [k for k in required if k not in args]
    if missing:
        sys.exit(f"{prog}: missing {', '.join(missing)} ({usage})")
    return args


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (`prog: problem`), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


@contextmanager
def one_line(prog: str, path: str | None = None, invalid: str | None = None) -> Iterator[None]:
    """A command's body: a DataError or ConfigError exits with `prog: <its message>`, an OSError with the file and
    the system's reason (`path` when the error names no file); `invalid` (if given) words a ValueError, e.g. a file
    that is not JSON. Exit status 1 (Python's for sys.exit with a message)."""
    try:
        yield
    except (DataError, ConfigError) as err:
        sys.exit(f"{prog}: {err}")
    except OSError as err:
        sys.exit(f"{prog}: {err.filename or path or ''}: {err.strerror or err}")
    except ValueError as err:
        if invalid is None:
            raise
        sys.exit(f"{prog}: {invalid} ({' '.join(str(err).split())[:160]})")
