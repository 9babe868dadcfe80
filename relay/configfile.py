"""`--config FILE`: Settings from a TOML file, checked as strictly as the flags.

Every Settings field is a top-level key with the field's name (`max_outbox`
or `max-outbox`). The file sits between the defaults and the command line:

    defaults < config file < $CHAT_RELAY_PASSWORD (password only) < flags

A typo must not silently leave a limit at its default, so unknown keys and
values of the wrong type are errors that name the key and the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from relay.config import Settings


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
