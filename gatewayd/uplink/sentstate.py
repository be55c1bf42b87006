"""What EnOS last accepted per sub-device (attributes, tags), kept in the state directory.

A restart must not resend what the cloud already holds, so each successful update is
recorded here: small JSON `{"version": 1, "devices": {"PK&DK": {name: value}}}`, keyed by
the EnOS keys (a device whose keys change is a new cloud device and gets everything),
written atomically (temporary file, fsync, rename) with mode 0600.

A missing file is "nothing sent yet". An unreadable or corrupt one is logged once and
taken as empty: the worst outcome is one resend of values EnOS already has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

VERSION = 1


def device_id(product_key: str, device_key: str) -> str:
    """The key of one sub-device in the file."""
    return f"{product_key}&{device_key}"


def parse(text: str) -> dict[str, dict[str, Any]]:
    """The per-device maps of a document; ValueError if it is not a version-1 document."""
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError("not a version-1 sent-state document")
    devices = document.get("devices")
    if not isinstance(devices, dict) or not all(isinstance(v, dict) for v in devices.values()):
        raise ValueError("'devices' is not a map of maps")
    return {str(k): dict(v) for k, v in devices.items()}


class SentState:
    """Last accepted values per sub-device, loaded once, saved after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._devices: dict[str, dict[str, Any]] = self._load()
        self._write_failed = False

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return parse(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning(
                "state file is unusable; what it recorded will be sent again",
                path=str(self.path),
                reason=str(exc),
            )
            return {}

    def get(self, device: str) -> dict[str, Any]:
        """What EnOS holds for `device` (a copy)."""
        return dict(self._devices.get(device, {}))

    def update(self, device: str, values: Mapping[str, Any]) -> None:
        """EnOS accepted `values` for `device`: record and persist them."""
        self._devices.setdefault(device, {}).update(values)
        self._save()

    def remove(self, device: str, names: list[str]) -> None:
        """EnOS deleted `names` of `device`: forget and persist."""
        held = self._devices.get(device, {})
        for name in names:
            held.pop(name, None)
        self._save()

    def _save(self) -> None:
        document = {"version": VERSION, "devices": self._devices}
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if not self._write_failed:
                log.warning(
                    "cannot persist what EnOS accepted; a restart may send it again",
                    path=str(self.path),
                    error=str(exc),
                )
            self._write_failed = True
            return
        if self._write_failed:
            log.info("sent state persisted again", path=str(self.path))
            self._write_failed = False
