"""The part of a command that runs on the bus task, through the poller's `DeviceHandle`.

These coroutines are handed to `BusPoller.execute`, so they run between two poll requests
with the bus to themselves; all Modbus detail stays behind the handle. They never start a
request that could not finish before the command's deadline (`stop_at`, event-loop time):
a write started is a write the reply can account for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gatewayd.commands.report import WriteReport, unique
from gatewayd.commands.validate import PlannedWrite, same_value, show
from gatewayd.enos.codes import ReplyCode
from gatewayd.modbus.errors import BusUnavailable, DeviceRejected, DeviceTimeout
from gatewayd.modbus.poller import DeviceHandle
from gatewayd.modbus.reader import PointNotWritable
from gatewayd.samples import Value

#: Modbus exception codes by name, for replies an operator can act on.
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

DEADLINE_REASON = "not written: the command's deadline would pass first (bus busy)"


class DeadlinePassed(Exception):
    """A read was not started because it could not finish before the command's deadline."""


def failure(exc: Exception, *, writing: bool) -> tuple[int, str]:
    """The reply code and reason for a failed device request."""
    if isinstance(exc, DeviceTimeout):
        what = "the write (it may or may not have taken effect)" if writing else "the read"
        return ReplyCode.DEVICE_OFFLINE, f"device offline: no answer to {what}: {exc}"
    if isinstance(exc, BusUnavailable):
        return ReplyCode.DEVICE_OFFLINE, f"bus unavailable: {exc}"
    if isinstance(exc, DeviceRejected):
        name = EXCEPTION_NAMES.get(exc.code, "unknown")
        code = ReplyCode.DEVICE_WRITE_FAILED if writing else ReplyCode.DEVICE_READ_FAILED
        return code, f"device rejected it with Modbus exception {exc.code} ({name})"
    if isinstance(exc, PointNotWritable):
        return ReplyCode.POINT_NOT_WRITABLE, show(exc, 200)
    code = ReplyCode.DEVICE_WRITE_FAILED if writing else ReplyCode.DEVICE_READ_FAILED
    return code, show(str(exc) or repr(exc), 200)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def run_writes(
    handle: DeviceHandle,
    report: WriteReport,
    *,
    stop_at: float,
    request_budget: float,
    stop_on_reject: bool,
    verify: bool,
) -> None:
    """Write `report.planned` in order, recording each outcome in `report`.

    A device that stops answering (or a lost bus) ends the writes: the rest are reported
    not written. A Modbus exception ends them only with `stop_on_reject` (services are a
    sequence; measurepoint.set points are independent). With `verify`, every written
    point is read back (one merged read) and compared with what it should hold.
    """
    while (write := report.take()) is not None:
        if _now() + request_budget * write.requests > stop_at:
            report.in_flight = None
            report.failed(write, ReplyCode.COMMAND_TIMEOUT, DEADLINE_REASON)
            report.skip_rest(ReplyCode.COMMAND_TIMEOUT, DEADLINE_REASON)
            return
        try:
            await handle.write_point(write.name, write.value)
        except (DeviceTimeout, BusUnavailable) as exc:
            report.failed(write, *failure(exc, writing=True))
            report.skip_rest(ReplyCode.DEVICE_OFFLINE, "not written: the device stopped answering")
            return
        except (DeviceRejected, PointNotWritable, ValueError, ArithmeticError) as exc:
            # ValueError covers CodecError (a read-modify-write register that changed).
            report.failed(write, *failure(exc, writing=True))
            if stop_on_reject:
                report.skip_rest(
                    ReplyCode.DEVICE_WRITE_FAILED, "not written: an earlier write failed"
                )
                return
            continue
        except Exception as exc:  # any other device-side failure still gets a precise reply
            report.failed(write, *failure(exc, writing=True))
            report.skip_rest(ReplyCode.DEVICE_WRITE_FAILED, "not written: an earlier write failed")
            return
        report.succeeded(write)
    if verify and report.written and not report.closed:
        await _verify(handle, report, stop_at=stop_at, request_budget=request_budget)


async def _verify(
    handle: DeviceHandle, report: WriteReport, *, stop_at: float, request_budget: float
) -> None:
    # The last write of a point is what it must hold now.
    last: dict[str, PlannedWrite] = {w.name: w for w in report.written}
    try:
        values = await read_points(
            handle, list(last), stop_at=stop_at, request_budget=request_budget
        )
    except DeadlinePassed:
        for write in list(last.values()):
            report.unverified(
                write, ReplyCode.COMMAND_TIMEOUT, "written, not verified: the deadline passed"
            )
        return
    except Exception as exc:
        code, reason = failure(exc, writing=False)
        for write in list(last.values()):
            report.unverified(write, code, f"written, but the read-back failed: {reason}")
        return
    for name, write in last.items():
        actual = values[name]
        if not same_value(write.expected, actual):
            report.unverified(
                write,
                ReplyCode.WRITE_NOT_VERIFIED,
                f"wrote {write.expected!r} but the device reads back {show(repr(actual))}",
            )


async def read_points(
    handle: DeviceHandle, names: Sequence[str], *, stop_at: float, request_budget: float
) -> dict[str, Value]:
    """Read `names` now (merged requests); `DeadlinePassed` if there is no time left."""
    if _now() + request_budget > stop_at:
        raise DeadlinePassed("the command's deadline would pass first (bus busy)")
    return await handle.read_points(unique(names))
