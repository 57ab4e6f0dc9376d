"""What every eqn command shares: one command-line style (key=value words with strict types, as eqn.run takes;
`--key value` and bare positional words accepted too) and `one_line`, which ends a command on eqn's own errors and
unreadable files with one line `prog: problem` and a non-zero exit."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from eqn.errors import ConfigError, DataError

TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse(
    argv: list[str] | None,
    prog: str,
    usage: str,
    known: tuple[str, ...],
    required: tuple[str, ...] = (),
    ints: dict[str, int] | None = None,
    bools: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
    positional: tuple[str, ...] = (),
    choices: dict[str, tuple[str, ...]] | None = None,
    doc: str | None = None,
) -> dict:
    """{key: value} from an eqn command line (sys.argv's when `argv` is None): key=value words (Hydra's style, as eqn.run takes); `--key value`,
    `--key=value` and a bare `--flag` (a bool set true) mean the same; bare words fill the `positional` keys in order
    (a last name ending in '*' takes the rest as a list). `ints` maps integer keys to their least value; `choices`
    lists a key's values. `--help` prints `doc` (or the usage). Anything else exits with one line naming the word."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ints, aliases, choices = ints or {}, aliases or {}, choices or {}
    if any(a in ("-h", "--help", "help") for a in argv[:1]) or "--help" in argv:
        try:
            print(doc or f"usage: python -m {prog} {usage}", flush=True)
        except BrokenPipeError:  # `--help | head`: the reader left early
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    words, rest = [], list(argv)
    while rest:  # --key value / --key=value / --flag -> key=value
        item = rest.pop(0)
        if item.startswith("--") and len(item) > 2:
            key, sep, value = item[2:].partition("=")
            key = aliases.get(key.replace("-", "_"), key.replace("-", "_"))
            if not sep:
                if key in bools:
                    value = "true"
                elif rest:
                    value = rest.pop(0)
                else:
                    sys.exit(f"{prog}: --{item[2:]} needs a value ({usage})")
            words.append(f"{key}={value}")
        else:
            words.append(item)
    args: dict = {}
    names = list(positional)
    for item in words:
        key, sep, value = item.partition("=")
        if not sep and names:  # a bare word: the next positional key
            name = names[0]
            if name.endswith("*"):
                args.setdefault(name[:-1], []).append(item)
                continue
            names.pop(0)
            key, sep, value = name, "=", item
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
        elif key in choices and value not in choices[key]:
            sys.exit(f"{prog}: {key}={value!r}: invalid choice; choose one of {', '.join(choices[key])}")
        else:
            args[key] = value
    missing = [k for k in required if k not in args]
    if missing:
        sys.exit(f"{prog}: missing {', '.join(missing)} ({usage})")
    return args


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
