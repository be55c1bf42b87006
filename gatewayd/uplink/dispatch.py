"""Cloud commands from arrival to reply: duplicates, backpressure, and where replies go.

Every downstream message goes through `CommandDispatcher.submit`, which never blocks the
inbound stream (a burst of thousands is taken in as fast as it arrives):

- **Duplicates** (`CommandLedger`): a command is keyed by its topic and its id with the
  id's JSON type, so ``5`` and ``"5"`` are two commands. The first delivery runs; a
  delivery of the same command while it runs waits for its outcome, one after it is
  answered from the ledger: every delivery gets the same reply, the device is written
  once. The last `SEEN_COMMANDS` outcomes are remembered.
- **Backpressure** (`Admission`): commands that reach a device (measurepoint set/get,
  services) are admitted up to `PENDING_PER_DEVICE` per target device and
  `PENDING_TOTAL` in all. Beyond that a command is answered at once with 2016
  COMMAND_OVERLOADED and nothing is written; it is not remembered, so the cloud may send
  it again. A device's requests are serialised on its bus anyway: a deeper queue would
  only answer later, or not before the deadline.
- **Replies** (`ReplyOutbox`): a command that started runs to its end even if the MQTT
  session drops, so it is never half-run and then run again. Its reply goes out on the
  session that is up when it is ready (`GatewaySession.publish_reply`: QoS 0, so replies
  never take the in-flight window from data and a slow broker is never an error). When
  no session is up, the reply is not sent (counted, logged once per outage); a
  redelivery after the reconnect is answered from the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gatewayd.enos import messages
from gatewayd.enos.codes import ReplyCode
from gatewayd.enos.session import BrokerUnavailable, Inbound
from gatewayd.episodes import Episodes
from gatewayd.uplink.command_ledger import Admission, Arrival, CommandLedger

log = structlog.get_logger(__name__)

#: Remembered finished commands, so a redelivered command is answered but not run again.
SEEN_COMMANDS = 1024
#: Commands waiting for or using one device; more are refused as overloaded.
PENDING_PER_DEVICE = 32
#: Commands waiting for or using any device.
PENDING_TOTAL = 256
#: Replies being handed to the socket at once.
REPLIES_IN_FLIGHT = 4

#: Commands that go to a device through the command handler (and so wait for its bus).
DEVICE_COMMANDS = frozenset(
    {
        messages.CommandKind.MEASUREPOINT_SET,
        messages.CommandKind.MEASUREPOINT_GET,
        messages.CommandKind.SERVICE,
    }
)

#: Where a reply goes: (reply topic, payload).
Respond = Callable[[str, bytes], None]
#: Runs one decoded command: (code, data, message) for its reply.
Execute = Callable[[messages.Command], Awaitable[tuple[int, object, str]]]
CommandKey = tuple[str, messages.CommandId]
DeviceKey = tuple[str, str]


@dataclass
class DispatchStats:
    """Counts since start: deliveries by fate, and replies that found no session."""

    received: int = 0
    executed: int = 0
    duplicates: int = 0
    overloaded: int = 0
    unsent: int = 0


class ReplyOutbox:
    """One session's command replies: queued, at most `in_flight` being published."""

    def __init__(
        self,
        publish: Callable[[str, bytes], Awaitable[None]],
        *,
        in_flight: int = REPLIES_IN_FLIGHT,
    ) -> None:
        self._publish = publish
        self._in_flight = in_flight
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.open = True
        self.sent = 0
        self.publishing = 0  # being published

    @property
    def queued(self) -> int:
        """Replies not yet handed to the broker."""
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being published."""
        return not self.queued and not self.publishing

    def put(self, topic: str, payload: bytes) -> None:
        """Queue a reply (never blocks)."""
        self._queue.put_nowait((topic, payload))

    async def run(self) -> None:
        """Publish queued replies until the session ends (cancelled with it)."""
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(self._in_flight):
                    group.create_task(self._worker(), name=f"uplink-replies-{number}")
        finally:
            self.open = False

    async def _worker(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            self.publishing += 1
            try:
                await self._publish(topic, payload)
            except BrokerUnavailable:
                # The session is going: the uplink notices through `lost`. Ending here,
                # not raising, keeps a reply from being the reason a session ends.
                self.open = False
                self._queue.put_nowait((topic, payload))  # counted as unsent
                return
            except Exception:
                log.exception("command reply not published", topic=topic)
                continue
            finally:
                self.publishing -= 1
            self.sent += 1


class CommandDispatcher:
    """Takes every downstream message; runs each command once; routes its replies."""

    def __init__(
        self,
        execute: Execute,
        *,
        per_device: int = PENDING_PER_DEVICE,
        total: int = PENDING_TOTAL,
        remember: int = SEEN_COMMANDS,
    ) -> None:
        self._execute = execute
        self._ledger: CommandLedger[CommandKey, Respond] = CommandLedger(remember)
        self._admission: Admission[DeviceKey] = Admission(per_device=per_device, total=total)
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: ReplyOutbox | None = None
        # "refused": commands refused as overloaded; "unsent": replies with no session.
        self._episodes = Episodes(log)
        self.stats = DispatchStats()

    @property
    def idle(self) -> bool:
        """No command running and no reply waiting to be published."""
        outbox = self._outbox
        return not self._tasks and (outbox is None or outbox.idle)

    # ------------------------------------------------------------------ sessions

    def attach(self, outbox: ReplyOutbox) -> None:
        """A session is up: replies go to `outbox` from now on (it runs once serving)."""
        if self._outbox is not None:  # a session that ended before it served
            self.detach(self._outbox)
        self._outbox = outbox
        self._episodes.end("unsent", "command replies flow again", count_as="unsent")

    def detach(self, outbox: ReplyOutbox) -> None:
        """The session of `outbox` ended: what it still held is not sent."""
        if self._outbox is outbox:
            self._outbox = None
        outbox.open = False
        if outbox.queued:
            self._count_unsent(outbox.queued)

    async def close(self) -> None:
        """Cancel the commands still running (shutdown) and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------ commands

    def submit(self, inbound: Inbound, respond: Respond | None = None) -> bool:
        """Take one downstream message; its reply goes to `respond`, now or when ready.

        `respond` defaults to the session that is up when the reply is ready. Returns False
        when no reply is due (a message that cannot be addressed). Never raises for bad
        input and never blocks.
        """
        self.stats.received += 1
        send = respond or self._send
        try:
            command = messages.decode_command(inbound.topic, inbound.payload)
        except messages.CommandError as exc:
            log.warning("malformed cloud command", topic=inbound.topic, reason=str(exc))
            payload = exc.reply_payload()
            if payload is None or exc.reply_topic is None:
                return False
            send(exc.reply_topic, payload)
            return True
        except messages.MalformedMessage as exc:  # pragma: no cover - decode raises CommandError
            log.warning("malformed cloud command", topic=inbound.topic, reason=str(exc))
            return False
        key: CommandKey = (inbound.topic, command.id)
        arrival = self._ledger.arrive(key, send)
        if isinstance(arrival, bytes):
            self.stats.duplicates += 1  # EnOS redelivered it: answer, do not act again
            send(command.reply_topic, arrival)
            return True
        if arrival is Arrival.WAIT:
            self.stats.duplicates += 1  # answered with the running command's outcome
            return True
        device = (command.product_key, command.device_key)
        if command.kind in DEVICE_COMMANDS and not self._admit(device):
            self._ledger.abandon(key)
            self.stats.overloaded += 1
            send(command.reply_topic, self._overloaded(command, device))
            return True
        task = asyncio.create_task(self._run(key, command), name="uplink-command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def answer(self, inbound: Inbound) -> tuple[str, bytes] | None:
        """`submit` and wait: the (reply topic, payload) for `inbound`, None when none is due."""
        future: asyncio.Future[tuple[str, bytes]] = asyncio.get_running_loop().create_future()

        def respond(topic: str, payload: bytes) -> None:
            if not future.done():
                future.set_result((topic, payload))

        if not self.submit(inbound, respond):
            return None
        return await future

    def _admit(self, device: DeviceKey) -> bool:
        if not self._admission.admit(device):
            return False
        self._episodes.end("refused", "cloud commands admitted again", count_as="refused")
        return True

    def _overloaded(self, command: messages.Command, device: DeviceKey) -> bytes:
        admission = self._admission
        full = admission.pending_for(device) >= admission.per_device
        limit = (
            f"{admission.per_device} commands already pending for this device"
            if full
            else f"{admission.total} commands already pending"
        )
        self._episodes.failed(
            "refused",
            "cloud commands refused as overloaded",
            limit=limit,
            product_key=device[0],
            device_key=device[1],
        )
        message = f"overloaded: {limit}; nothing written, send it again later"
        return command.reply(ReplyCode.COMMAND_OVERLOADED, None, message)

    async def _run(self, key: CommandKey, command: messages.Command) -> None:
        device = (command.product_key, command.device_key)
        admitted = command.kind in DEVICE_COMMANDS
        try:
            code, data, message = await self._execute(command)
            payload = command.reply(code, data, message)
        except asyncio.CancelledError:
            self._ledger.abandon(key)  # shutdown: no outcome to give
            raise
        except Exception as exc:  # a bug costs this command an error reply, nothing else
            log.exception("cloud command failed", method=command.method)
            payload = command.reply(
                ReplyCode.COMMAND_HANDLER_FAILED, None, f"command handler failed: {exc!r}"
            )
        finally:
            if admitted:
                self._admission.release(device)
        self.stats.executed += 1
        for respond in self._ledger.finish(key, payload):
            respond(command.reply_topic, payload)

    def _send(self, topic: str, payload: bytes) -> None:
        outbox = self._outbox
        if outbox is None or not outbox.open:
            self._count_unsent(1)
            return
        outbox.put(topic, payload)

    def _count_unsent(self, count: int) -> None:
        self._episodes.start(
            "unsent", "command replies not sent: no MQTT session (redeliveries are answered)"
        )
        self._episodes.add("unsent", count)
        self.stats.unsent += count
