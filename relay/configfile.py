"""`--config FILE`: Settings from a TOML file, checked as strictly as the flags.

Every Settings field is a top-level key with the field's name (`max_outbox`
or `max-outbox`). The file sits between the defaults and the command line:

    defaults < config file < $CHAT_RELAY_PASSWORD, $CHAT_RELAY_OPER_PASSWORD < flags

A typo must not silently leave a limit at its default, so unknown keys and
values of the wrong type are errors that name the key and the file. A file
that holds a password should be readable by its owner only: `exposure()`
words the warning when it is not.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from relay.config import SECRET_ENV, Settings


class ConfigError(Exception):
    """The config file cannot be used as written (the operator's fault)."""


def field_types() -> dict[str, type]:
    """Each Settings field's value type, taken from its default (as the flags do)."""
    defaults = Settings()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(Settings)}


def _coerce(path: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # `rate_limit = 5` means 5.0
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: {key} must be {kind.__name__}, "
                      f"not {type(value).__name__} ({value!r})")


def load(path: str | Path) -> dict[str, Any]:
    """Read `path`; returns {field name: value} for the keys it sets.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown keys (all named), wrong types.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    types = field_types()
    names = {key: key.replace("-", "_") for key in raw}
    unknown = sorted(key for key, name in names.items() if name not in types)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (known keys: {', '.join(sorted(types))})"
        )
    seen: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, name in names.items():
        if name in seen:
            raise ConfigError(f"{path}: {seen[name]!r} and {key!r} set the same setting")
        seen[name] = key
        values[name] = _coerce(str(path), key, raw[key], types[name])
    return values


def exposure(path: str | Path, values: dict[str, Any]) -> str:
    """A warning if the file sets a password and group or others may read it, else "".

    Only the mode is judged (not ACLs or the directory): the common mistake
    is a config written with the default umask, 0644.
    """
    held = [name for name in SECRET_ENV.values() if values.get(name)]
    if not held:
        return ""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return ""
    if not mode & 0o044:
        return ""
    who = " and ".join(w for w, bit in (("its group", 0o040), ("every local user", 0o004))
                       if mode & bit)
    return (f"warning: {path} holds {' and '.join(held)} but {who} can read it "
            f"(mode {mode:04o}); chmod 600 {path}")
