"""The gateway's topology in EnOS against the config: what is missing, what is extra.

`thing.topo.get` (enos-protocol.md §3.4, #5) lists the sub-devices bound to the gateway.
A configured sub-device missing from it cannot log in (740); one the cloud lists that the
config no longer has is "extra" (a replaced meter, a renamed key). `TopoDiff` is the pure
comparison; `TopologySync` reads the topology at the start of each session, adds the
missing ones when `uplink.auto_topo` is on, and reports extras once per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd.enos import messages
from gatewayd.enos.session import GatewaySession
from gatewayd.episodes import Episodes
from gatewayd.uplink.asking import reply_data

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (productKey, deviceKey)


def cloud_topology(data: Any) -> set[Key] | None:
    """The sub-devices of a `thing.topo.get` reply's data, or None if it is not a list.

    Lenient (§3.4: the docs show two keys, NODE a long record): an entry counts when it
    has string `productKey` and `deviceKey`; anything else in it is ignored.
    """
    if not isinstance(data, list):
        return None
    found: set[Key] = set()
    for entry in data:
        if isinstance(entry, dict):
            pk, dk = entry.get("productKey"), entry.get("deviceKey")
            if isinstance(pk, str) and isinstance(dk, str):
                found.add((pk, dk))
    return found


@dataclass(frozen=True)
class TopoDiff:
    """Config vs cloud: in both, only in the config (missing), only in the cloud (extra)."""

    present: tuple[Key, ...]
    missing: tuple[Key, ...]
    extra: tuple[Key, ...]

    @classmethod
    def of(cls, configured: Iterable[Key], cloud: Iterable[Key]) -> TopoDiff:
        """Compare; each group sorted."""
        mine, theirs = set(configured), set(cloud)
        return cls(
            present=tuple(sorted(mine & theirs)),
            missing=tuple(sorted(mine - theirs)),
            extra=tuple(sorted(theirs - mine)),
        )


async def read_topology(
    session: GatewaySession, gw_pk: str, gw_dk: str, msg_id: str, *, timeout: float | None = None
) -> tuple[set[Key] | None, str]:
    """(sub-devices, "") from `thing.topo.get`, or (None, why it could not be read).

    `timeout`: how long to wait for the reply (None: the session's reply timeout).
    """
    request = messages.topo_get(gw_pk, gw_dk, id=msg_id)
    data, why_not = await reply_data(session, request, timeout=timeout)
    if why_not:
        return None, why_not
    found = cloud_topology(data)
    if found is None:
        return None, "thing.topo.get reply data is not a list"
    return found, ""


class TopologyReport:
    """Extras reported once per process; an unreadable topology once per episode."""

    def __init__(self) -> None:
        self._reported: set[Key] = set()
        self._unreadable = Episodes(log)
        #: The last diff read (status, tests).
        self.last: TopoDiff | None = None

    def read_failed(self, why: str) -> None:
        """One warning until the topology can be read again."""
        self._unreadable.failed(
            "topology", "cannot read the gateway topology; logging in as configured", reason=why
        )

    def seen(self, diff: TopoDiff, names: dict[Key, str]) -> None:
        """Log what is missing (info) and each new extra once (warning)."""
        self._unreadable.ok("topology", "gateway topology read again")
        self.last = diff
        if diff.missing:
            log.info(
                "sub-devices missing from the gateway topology",
                devices=[names.get(k, f"{k[0]}/{k[1]}") for k in diff.missing],
            )
        new = [k for k in diff.extra if k not in self._reported]
        if new:
            self._reported.update(new)
            log.warning(
                "sub-devices in the gateway topology that the config does not have"
                " (gatewayd topo CONFIG --prune removes them)",
                devices=[f"{pk}/{dk}" for pk, dk in new],
            )
