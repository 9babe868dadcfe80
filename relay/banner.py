"""The "join with" lines of the start banner: commands that run as printed.

A banner is copied and pasted, so each command must work from where the
operator stands. `chat-client` is named plainly only when that name on
$PATH is the one installed next to this Python; otherwise (a checkout run by
`make run`, whose scripts live in .venv/bin) it is named by a path, relative
to the current directory when it lies below it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CLIENT = "chat-client"


def client_command(
    executable: str | None = None, cwd: str | None = None, path: str | None = None
) -> str:
    """How to run chat-client from `cwd`, given the Python running the relay.

    Args:
        executable: the relay's Python (default sys.executable); its bin
            directory holds the chat-client script of the same install.
        cwd: the operator's directory (default: the current one).
        path: $PATH to search (default: the environment's).
    """
    bin_dir = Path(executable or sys.executable).parent
    script = bin_dir / CLIENT
    if not script.exists():
        # Run from source without an install: the module works where the relay did.
        return f"{_shown(bin_dir / Path(executable or sys.executable).name, cwd)} -m clients.cli"
    found = shutil.which(CLIENT, path=path if path is not None else os.environ.get("PATH"))
    if found and _same_file(found, script):
        return CLIENT
    return _shown(script, cwd)


def _same_file(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _shown(file: Path, cwd: str | None) -> str:
    """`file` relative to `cwd` when below it (`.venv/bin/chat-client`), else absolute."""
    here = Path(cwd or os.getcwd()).absolute()
    try:
        rel = file.absolute().relative_to(here)
    except ValueError:
        return str(file.absolute())
    if here == Path(here.anchor):
        return str(file.absolute())  # from /, the absolute path reads better
    return str(rel) if "/" in str(rel) else f"./{rel}"  # a bare name would search $PATH


def join_lines(host: str, port: int, tls: bool, client: str) -> list[str]:
    """The banner's lines that tell people how to join, one way each."""
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    irc = (f"any IRC client with TLS: server {host}, port {port}" if tls
           else f"irssi -c {host} -p {port}   (any IRC client: server {host}, port {port})")
    return [
        f"  join with:  {client} {'--tls ' if tls else ''}{host} {port}",
        f"         or:  openssl s_client -quiet -connect {shown}:{port}" if tls
        else f"         or:  nc {host} {port}",
        f"   web page:  {scheme}://{shown}:{port}/",
        f"        IRC:  {irc}",
    ]
