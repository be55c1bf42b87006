"""`gatewayd run CONFIG` whose sessions subscribe their command topics (for mosquitto).

    python -m tests.bench.commands_daemon CONFIG

EnOS routes command topics to a device without a SUBSCRIBE; mosquitto delivers only to
subscribers. Everything else is exactly `gatewayd run` (see tests/integration/mqtt_cloud.py).
"""

from __future__ import annotations

import sys

from gatewayd.cli import main
from tests.integration.mqtt_cloud import command_subscriptions

if __name__ == "__main__":
    with command_subscriptions():
        status = main(["run", *sys.argv[1:]])
    sys.exit(status)
