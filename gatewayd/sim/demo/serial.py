"""A `socat` pseudo-terminal pair: the demo's stand-in for an RS-485 line.

`socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B` joins two ptys; the gateway
opens A, the simulated meters answer on B. socat announces "starting data transfer loop"
once both links exist, so startup waits on that line rather than polling the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from types import TracebackType

__all__ = ["SocatError", "SocatPair", "socat_path"]

_READY_MARKER = b"starting data transfer loop"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class SocatError(RuntimeError):
    """socat did not come up (missing, exited, or never announced its links)."""


def socat_path() -> str | None:
    """The socat executable on PATH, if any."""
    return shutil.which("socat")


class SocatPair:
    """Two linked ptys at `a` and `b` (paths inside `workdir`) for as long as it runs."""

    def __init__(self, workdir: Path, executable: str = "socat") -> None:
        self.a = str(workdir / "tty-gateway")
        self.b = str(workdir / "tty-meters")
        self._executable = executable
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._log: list[bytes] = []

    async def start(self) -> None:
        """Start socat and return once both links exist."""
        self._process = await asyncio.create_subprocess_exec(
            self._executable, "-d", "-d",
            f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Its own session: a Ctrl-C on the terminal reaches the demo, which stops socat
            # last, instead of killing the meters' line while the daemon still drains.
            start_new_session=True,
        )  # fmt: skip
        try:
            await asyncio.wait_for(self._until_ready(), _START_TIMEOUT_S)
        except (TimeoutError, SocatError):
            await self.stop()
            raise
        # Keep reading socat's diagnostics so a full pipe never blocks it.
        assert self._process is not None
        assert self._process.stderr is not None
        self._drain = asyncio.create_task(
            self._read_rest(self._process.stderr), name="socat-stderr"
        )

    async def _until_ready(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        while True:
            line = await self._process.stderr.readline()
            if not line:
                text = b"".join(self._log).decode(errors="replace").strip()
                raise SocatError(f"socat exited before linking the ptys: {text}")
            self._log.append(line)
            if _READY_MARKER in line:
                return

    @staticmethod
    async def _read_rest(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self) -> None:
        """End socat: both ptys go away."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            drain, self._drain = self._drain, None
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain

    async def __aenter__(self) -> SocatPair:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
