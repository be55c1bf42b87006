"""The cloud-command handler: measurepoint set/get and services, written safely to devices.

`CloudCommands(site)` is the uplink's `CommandHandler`. Per command it

1. resolves the target sub-device from the live configuration and session (`target`);
2. validates the whole command against the device model (`validate`), and refuses it
   with every reason if anything is wrong - a command is never half-validated, so an
   invalid point means nothing at all is written;
3. runs the writes/reads as ONE priority operation on the device's bus (`bus_ops`), which
   jumps the poll queue and never starts a request it cannot finish by the deadline;
4. answers 200, or a code >= 2000 whose message and `data` name each point that failed.

Timing: the reply is due within `reply_by` seconds of the command's arrival (25 s by
default, inside the cloud's 30 s). Device I/O is not started after `deadline` (20 s); if
the bus has not even begun the operation by `reply_by`, the answer is `COMMAND_TIMEOUT`
and the operation is dropped from the queue unrun.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import structlog

from gatewayd.commands.bus_ops import DeadlinePassed, failure, read_points, run_writes
from gatewayd.commands.report import Reply, WriteReport, refused
from gatewayd.commands.target import Target, resolve_target
from gatewayd.commands.validate import Refusal, plan_get, plan_service, plan_set, show
from gatewayd.config.models import Config
from gatewayd.enos import messages
from gatewayd.enos.codes import ReplyCode
from gatewayd.modbus.poller import BusPoller, DeviceHandle
from gatewayd.samples import Value
from gatewayd.uplink.uplink import CommandHandler, Uplink

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: No device request is started later than this after the command arrived (seconds).
DEADLINE_S = 20.0
#: The reply goes out by then at the latest, whatever the bus is doing (EnOS waits 30 s).
REPLY_BY_S = 25.0


class CommandSite(Protocol):
    """What the handler reads from the running daemon, at call time (reloads replace it)."""

    @property
    def config(self) -> Config: ...

    @property
    def pollers(self) -> Mapping[str, BusPoller]: ...

    @property
    def uplink(self) -> Uplink | None: ...


class _ReplyDue(Exception):
    """The bus operation was not done (or not even started) when the reply fell due."""


class CloudCommands:
    """Handles MEASUREPOINT_SET, MEASUREPOINT_GET and SERVICE commands for sub-devices."""

    def __init__(
        self, site: CommandSite, *, deadline: float = DEADLINE_S, reply_by: float = REPLY_BY_S
    ) -> None:
        if not 0 < deadline <= reply_by:
            raise ValueError("need 0 < deadline <= reply_by")
        self._site = site
        self._deadline = deadline
        self._reply_by = reply_by

    async def __call__(self, command: messages.Command) -> tuple[int, object, str]:
        """Execute `command` and return (code, data, message) for its reply."""
        started = asyncio.get_running_loop().time()
        site = self._site
        uplink = site.uplink
        target = resolve_target(
            command.product_key,
            command.device_key,
            config=site.config,
            registry=uplink.registry if uplink is not None else None,
            pollers=site.pollers,
        )
        if isinstance(target, Refusal):
            code, _, message = refused([target], what=f"{command.method} refused", nothing="done")
            return code, None, message
        stop_at = started + self._deadline
        reply_at = started + self._reply_by
        kind = command.kind
        if kind is messages.CommandKind.MEASUREPOINT_SET:
            reply = await self._set(command, target, stop_at, reply_at)
        elif kind is messages.CommandKind.MEASUREPOINT_GET:
            reply = await self._get(command, target, stop_at, reply_at)
        elif kind is messages.CommandKind.SERVICE:
            reply = await self._service(command, target, stop_at, reply_at)
        else:
            return ReplyCode.COMMAND_HANDLER_NOT_REGISTERED, None, f"{command.method} not handled"
        log.info(
            "cloud command answered",
            method=command.method,
            device=target.device.name,
            id=show(command.id),  # cloud text: may hold anything, even lone surrogates
            code=int(reply[0]),
            detail=reply[2] or None,
        )
        return reply

    # ------------------------------------------------------------------ bus access

    async def _on_bus(
        self, target: Target, op: Callable[[DeviceHandle], Awaitable[T]], reply_at: float
    ) -> T:
        """Run `op` on the device's bus task; `_ReplyDue` if it is not done by `reply_at`."""
        scope = asyncio.timeout_at(reply_at)
        try:
            async with scope:
                return await target.poller.execute(target.device.name, op)
        except TimeoutError:
            if scope.expired():
                raise _ReplyDue from None
            raise

    # ------------------------------------------------------------------ commands

    async def _set(
        self, command: messages.Command, target: Target, stop_at: float, reply_at: float
    ) -> Reply:
        plan = plan_set(command.params, device=target.device, model=target.model)
        if plan.refusals:
            return refused(plan.refusals, what="measurepoint.set refused")
        report = WriteReport(plan.writes)
        await self._write(target, report, stop_at, reply_at, stop_on_reject=False,
                          verify=target.device.verify_writes)  # fmt: skip
        if report.complete:
            return ReplyCode.SUCCESS, {}, ""
        return report.reply(context="measurepoint.set")

    async def _write(
        self,
        target: Target,
        report: WriteReport,
        stop_at: float,
        reply_at: float,
        *,
        stop_on_reject: bool,
        verify: bool,
    ) -> None:
        async def op(handle: DeviceHandle) -> None:
            await run_writes(
                handle,
                report,
                stop_at=stop_at,
                request_budget=target.request_budget,
                stop_on_reject=stop_on_reject,
                verify=verify,
            )

        try:
            await self._on_bus(target, op, reply_at)
        except (_ReplyDue, TimeoutError):
            report.skip_rest(
                ReplyCode.COMMAND_TIMEOUT, "not written: the bus was too busy before the deadline"
            )
        except Exception as exc:  # never lose track of what was written
            log.exception("command bus operation failed", device=target.device.name)
            report.skip_rest(
                ReplyCode.COMMAND_HANDLER_FAILED, f"not written: internal error {exc!r}"
            )
        finally:
            report.closed = True  # a late-starting operation must not write any more

    async def _read(
        self, target: Target, names: tuple[str, ...], stop_at: float, reply_at: float
    ) -> dict[str, Value] | Refusal:
        async def op(handle: DeviceHandle) -> dict[str, Value]:
            return await read_points(
                handle, names, stop_at=stop_at, request_budget=target.request_budget
            )

        try:
            return await self._on_bus(target, op, reply_at)
        except (_ReplyDue, TimeoutError, DeadlinePassed):
            return Refusal(
                "read",
                ReplyCode.COMMAND_TIMEOUT,
                "not read: the bus was too busy before the deadline",
            )
        except Exception as exc:
            code, reason = failure(exc, writing=False)
            return Refusal("read", code, reason)

    async def _get(
        self, command: messages.Command, target: Target, stop_at: float, reply_at: float
    ) -> Reply:
        plan = plan_get(command.params, model=target.model)
        if plan.refusals:
            code, _, message = refused(
                plan.refusals, what="measurepoint.get refused", nothing="read"
            )
            return code, None, message
        values = await self._read(target, plan.names, stop_at, reply_at)
        if isinstance(values, Refusal):
            return values.code, None, f"measurepoint.get failed: {values.reason}"
        return _values_reply(values, context="measurepoint.get")

    async def _service(
        self, command: messages.Command, target: Target, stop_at: float, reply_at: float
    ) -> Reply:
        service_id = command.service_id or ""
        plan = plan_service(service_id, command.params, device=target.device, model=target.model)
        context = f"service {show(service_id)}"
        if plan.refusals:
            return refused(plan.refusals, what=f"{context} refused")
        report = WriteReport(plan.writes)
        # A service is a sequence: stop at the first failure. Its outputs are its check.
        await self._write(target, report, stop_at, reply_at, stop_on_reject=True, verify=False)
        if not report.complete:
            return report.reply(context=context)
        if not plan.outputs:
            return ReplyCode.SUCCESS, {}, ""
        values = await self._read(target, plan.outputs, stop_at, reply_at)
        if isinstance(values, Refusal):
            written = ", ".join(report.written_names()) or "none"
            message = (
                f"{context}: every write done (written: {written}), "
                f"but reading its outputs failed: {values.reason}"
            )
            data = {"written": report.written_names(), "failed": {"outputs": values.reason}}
            return values.code, data, message
        return _values_reply(values, context=context)


def _values_reply(values: dict[str, Value], *, context: str) -> Reply:
    """200 with the values, or DEVICE_READ_FAILED naming points JSON cannot carry."""
    bad = [
        name
        for name, value in values.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if not bad:
        return ReplyCode.SUCCESS, values, ""
    data = {name: (None if name in bad else value) for name, value in values.items()}
    reasons = "; ".join(f"{name}: the device reports {values[name]!r}" for name in bad)
    return ReplyCode.DEVICE_READ_FAILED, data, f"{context}: {reasons} (not a JSON number)"


def command_handler_factory(
    site: CommandSite, *, deadline: float = DEADLINE_S, reply_by: float = REPLY_BY_S
) -> CommandHandler:
    """The `Daemon`'s command factory: a `CloudCommands` reading `site` at call time."""
    return CloudCommands(site, deadline=deadline, reply_by=reply_by)
