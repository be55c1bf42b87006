"""Secret files: where a relative `*_secret_file` is looked up, and how it is read.

Under systemd, `LoadCredential=gateway.secret:/etc/gatewayd/gateway.secret` exposes the
file in `$CREDENTIALS_DIRECTORY`, readable by the service even when the source file is
root-only. A relative secret file is therefore looked up there first (when the variable
is set and the file exists in it), then next to the config file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


#: Mode bits that let the group or others at a secret (OpenSSH's test for private keys).
SHARED_MODE_BITS = 0o077


class SecretFileError(Exception):
    """A secret file that cannot be used; the message is for the engineer."""


class SecretFileTooOpenError(SecretFileError):
    """A secret file the group or others may read or write (`chmod 600` fixes it)."""


def resolve_secret_file(value: Path, config_dir: Path, environ: Mapping[str, str]) -> Path:
    """The absolute file a `*_secret_file` value names (it need not exist)."""
    if value.is_absolute():
        return value
    credentials = environ.get(CREDENTIALS_ENV)
    if credentials:
        candidate = Path(credentials) / value
        if candidate.is_file():
            return Path(os.path.abspath(candidate))
    return Path(os.path.abspath(config_dir / value))


def read_secret(path: Path) -> str:
    """The secret in `path`, without its trailing newline; `SecretFileError` if unusable.

    A file the group or others may read or write is refused, as OpenSSH refuses such a
    private key: the secret is no longer one, and keeping it working hides that.
    """
    try:
        with path.open(encoding="utf-8") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & SHARED_MODE_BITS:
                raise SecretFileTooOpenError(
                    f"secret file is open to group or others (mode {mode:04o})"
                )
            text = handle.read()
    except FileNotFoundError:
        raise SecretFileError("secret file not found") from None
    except IsADirectoryError:
        raise SecretFileError("secret file is a directory") from None
    except PermissionError:
        raise SecretFileError("secret file is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise SecretFileError("secret file is not UTF-8 text") from None
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file: {exc.strerror}") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise SecretFileError("secret file is empty")
    return secret
