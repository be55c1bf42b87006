"""Which devices' output is withheld from the spool: the one place muting is decided.

The cloud disables (`combine.disable`) or deletes (`combine.delete`) sub-devices; what they
measure must then not be spooled for EnOS. A disable lasts until `combine.enable`; a delete
lasts until the configuration gives the device new keys or drops it (`forget`), as the
uplink's sub-device registry does. The table belongs to the daemon, not to a bus task, so a
reload (which builds new pollers) keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable


class Muting:
    """The devices whose samples and events the mapping stage drops (pure, no I/O)."""

    def __init__(self) -> None:
        self._disabled: set[str] = set()
        self._deleted: set[str] = set()

    def disable(self, device: str) -> None:
        """The cloud disabled `device`: mute it until `enable`."""
        self._disabled.add(device)

    def enable(self, device: str) -> None:
        """The cloud enabled `device` again (a deleted device stays muted)."""
        self._disabled.discard(device)

    def delete(self, device: str) -> None:
        """The cloud deleted `device`: mute it for good (until `forget`)."""
        self._deleted.add(device)

    def forget(self, devices: Iterable[str]) -> None:
        """The configuration replaced or dropped these devices: they start unmuted."""
        for device in devices:
            self._disabled.discard(device)
            self._deleted.discard(device)

    def publishing(self, device: str) -> bool:
        """Whether `device`'s output goes to the spool."""
        return device not in self._disabled and device not in self._deleted
