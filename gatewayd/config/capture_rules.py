"""Checks of a model's capture rules that need the site: the device's poll interval (how
big a capture file gets) and whether `integration.http` is there to send it.

The checks of the model alone (known points, the file parameter) are in `model_rules`.
"""

from __future__ import annotations

import math

from gatewayd.config.errors import ConfigIssue, DataPath
from gatewayd.config.models import CaptureConfig, DeviceConfig, DeviceModel, IntegrationConfig
from gatewayd.config.yamlload import YamlDocument

__all__ = ["CAPTURE_MAX_FILE_BYTES", "CELL_BYTES", "capture_file_estimate", "check_captures"]

#: EnOS takes files of at most 100 MB with an event (integration/PROTOCOL.md §3.5).
CAPTURE_MAX_FILE_BYTES = 100 * 1000 * 1000
#: Bytes a CSV cell takes on average (a value with its comma), for the estimate.
CELL_BYTES = 20


def capture_file_estimate(capture: CaptureConfig, device: DeviceConfig, model: DeviceModel) -> int:
    """About how many bytes a capture of `device` writes: (points + the time column) ×
    samples × `CELL_BYTES`, samples at the fastest captured point's poll interval."""
    intervals = {p.measurepoint: p.poll_interval or device.poll_interval for p in model.points}
    fastest = min(intervals.get(name, device.poll_interval) for name in capture.points)
    samples = math.ceil((capture.before + capture.after) / fastest) + 1
    return (len(capture.points) + 1) * samples * CELL_BYTES


def check_captures(
    doc: YamlDocument,
    prefix: DataPath,
    device: DeviceConfig,
    model: DeviceModel,
    integration: IntegrationConfig,
) -> list[ConfigIssue]:
    """The issues of `model`'s captures as `device` polls them, located in the model's
    document (`doc` at `prefix`)."""
    issues: list[ConfigIssue] = []
    for index, rule in enumerate(model.events):
        capture = rule.capture
        if capture is None:
            continue
        at: DataPath = (*prefix, "events", index, "capture")
        if integration.http is None:
            issues.append(
                doc.issue(
                    at,
                    "a capture needs integration.http: its file goes to EnOS with the "
                    "event over HTTP",
                    "add integration: {http: {address, org_id, access_key, secret_key_file}}"
                    " to gatewayd.yaml",
                    key=True,
                )
            )
        size = capture_file_estimate(capture, device, model)
        if size > CAPTURE_MAX_FILE_BYTES:
            issues.append(
                doc.issue(
                    at,
                    f"device '{device.name}' would capture about {size / 1e6:.0f} MB for "
                    f"event '{rule.event}', over EnOS' 100 MB file limit",
                    "shorten before/after, capture fewer points or poll them less often",
                    key=True,
                )
            )
    return issues
