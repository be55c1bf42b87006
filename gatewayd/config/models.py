"""Typed configuration models: the contract between the YAML files and the daemon.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting.
Durations are given with units in YAML (`5s`, `250ms`) and held as float seconds here;
sizes are given with units (`64MiB`) and held as int bytes. The loader
(`gatewayd.config.loader`) turns YAML into these models and maps every validation
error back to `file:line:col`.
"""

from __future__ import annotations

import datetime
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gatewayd.config.enums import REGISTER_COUNT, DataType, Order, Table, Timestamps
from gatewayd.config.units import Duration, Size, format_duration


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


# ---------------------------------------------------------------------------- enums
# Table, DataType, REGISTER_COUNT, Order and Timestamps live in `gatewayd.config.enums`
# (standard library only, so the pure cores can use them without pydantic).

__all__ = ["REGISTER_COUNT", "DataType", "Order", "Table", "Timestamps"]


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class SyncMode(StrEnum):
    """SQLite `PRAGMA synchronous` levels offered for the spool."""

    OFF = "off"
    NORMAL = "normal"
    FULL = "full"
    EXTRA = "extra"


class HistoricalEvents(StrEnum):
    """How backlog events reach EnOS (`uplink.historical_events`)."""

    THING = "thing"  # thing.event.{id}.post, like live events
    INTEGRATION = "integration"  # integration.event.post on the product's mode-4 channel


class LogFormat(StrEnum):
    AUTO = "auto"  # journald under systemd, console on a terminal, JSON otherwise
    CONSOLE = "console"
    JSON = "json"
    JOURNALD = "journald"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# ---------------------------------------------------------------------------- gateway


class TlsConfig(Strict):
    """TLS to the broker. Port 18883 is mutual X.509: give `cert_file` and `key_file`."""

    enabled: bool = False
    ca_file: Path | None = None  # None: the system trust store
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True  # verification stays on unless an engineer turns it off explicitly

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class BrokerConfig(Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 11883
    tls: TlsConfig = TlsConfig()
    keepalive: Annotated[Duration, Field(ge=60, le=300)] = 60.0  # EnOS accepts 60-300 s
    connect_timeout: Annotated[Duration, Field(gt=0)] = 10.0


class GatewayConfig(Strict):
    """The gateway's own EnOS identity and broker."""

    product_key: Annotated[str, Field(min_length=1)]
    device_key: Annotated[str, Field(min_length=1)]
    # Secure mode 2 signs with the device secret; mode 3 activates once with the product
    # secret and persists the device secret EnOS returns (into the spool's directory).
    secure_mode: Literal[2, 3] = 2
    device_secret: SecretStr | None = None
    device_secret_file: Path | None = None
    product_secret: SecretStr | None = None
    product_secret_file: Path | None = None
    sign_method: Literal["sha256", "sha1", "md5"] = "sha256"
    broker: BrokerConfig


# ---------------------------------------------------------------------------- buses


class BusBase(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    timeout: Annotated[Duration, Field(gt=0)] = 1.0  # per request, before a retry
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    # Registers of gap the planner may read through to save a request; "auto" derives the
    # break-even from the bus's per-request overhead (baud rate and turnaround).
    gap_fill: Literal["auto"] | Annotated[int, Field(ge=0, le=124)] = "auto"
    turnaround: Annotated[Duration, Field(ge=0)] = 0.005  # device think time per request
    reconnect_max: Annotated[Duration, Field(gt=0)] = 60.0


class TcpBus(BusBase):
    """Modbus TCP (MBAP framing) to one endpoint."""

    type: Literal["tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502


class RtuOverTcpBus(BusBase):
    """RTU framing (with CRC) over a TCP socket: serial device servers / gateways."""

    type: Literal["rtu_over_tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 9600  # of the serial side, for timing


class SerialBus(BusBase):
    """Modbus RTU on an RS-485 serial port."""

    type: Literal["rtu"]
    device: str  # e.g. /dev/ttyUSB0 or /dev/serial/by-id/...
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 9600
    parity: Parity = Parity.NONE
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    # Silence between frames; "auto" is the Modbus 3.5 character times (1.75 ms above 19200).
    inter_frame_delay: Literal["auto"] | Annotated[Duration, Field(ge=0)] = "auto"


BusConfig = Annotated[TcpBus | RtuOverTcpBus | SerialBus, Field(discriminator="type")]


# ---------------------------------------------------------------------------- models


_PERCENT = re.compile(r"^\s*\d+(\.\d+)?\s*%\s*$")


class ReportConfig(Strict):
    """When a point's readings go to EnOS: every one, or on change (report by exception).

    `change` sends a reading that moved beyond `deadband` from the last value sent (a number,
    absolute, or `'2%'` of that value; floats only: other types compare exactly), a quality
    change, and at least one reading per `heartbeat`.
    """

    on: Literal["always", "change"] = "always"
    deadband: (
        Annotated[float, Field(ge=0)]
        | Annotated[str, Field(pattern=_PERCENT.pattern)]
    ) = 0.0
    heartbeat: Annotated[Duration, Field(gt=0)] = 900.0

    @field_validator("deadband", mode="before")
    @classmethod
    def _number_or_percent(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("expected a number (absolute) or a percent such as '2%'")  # noqa: TRY004
        if isinstance(value, int | float) and value < 0:
            raise ValueError(f"deadband {value} is negative; give 0 or more")
        if isinstance(value, str) and _PERCENT.match(value) is None:
            raise ValueError(
                f"deadband '{value}' is neither a number nor a percent such as '2%'"
            )
        return value

    @property
    def percent(self) -> float | None:
        """The deadband as a percent of the last sent value, if given so."""
        if isinstance(self.deadband, str):
            return float(self.deadband.strip().rstrip("%"))
        return None


class PointConfig(Strict):
    """One register range (or coil) mapped to one EnOS measurepoint."""

    measurepoint: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    count: Annotated[int, Field(ge=1, le=125)] | None = None  # registers; required for string
    bit: Annotated[int, Field(ge=0, le=15)] | None = None  # bool inside a register
    byte_order: Order | None = None  # None: the device's
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    enum: dict[int, str] | None = None
    poll_interval: Duration | None = None  # None: the device's
    writable: bool = False
    min: float | None = None
    max: float | None = None
    quality: bool = False  # send {"value", "quality"} to EnOS
    report: ReportConfig | None = None  # None: the model's default (else `always`)

    @property
    def register_count(self) -> int:
        """Registers (or bits, for bit tables) this point spans."""
        if self.table.is_bit:
            return 1
        if self.type is DataType.STRING:
            return self.count or 0
        return REGISTER_COUNT[self.type]


#: A name EnOS accepts as an identifier (measurepoints, attributes, services).
Identifier = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
#: A value a device or the gateway gives an attribute or tag in the YAML itself.
StaticValue = str | bool | int | float
#: A tag key: any non-empty text without control characters.
TagKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]


def _dates_as_text(value: Any) -> Any:
    """YAML reads `2026-11-30` as a date: keep it as the text the engineer wrote."""
    if isinstance(value, dict):
        return {
            k: v.isoformat() if isinstance(v, datetime.date | datetime.time) else v
            for k, v in value.items()
        }
    return value


class AttributePointConfig(Strict):
    """Nameplate data read from registers and sent as an EnOS attribute (serial number,
    firmware version, rated power): the point syntax of measurepoints, read at each login
    of the sub-device and every `uplink.attributes_interval`, sent only when it changed."""

    attribute: Identifier
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    count: Annotated[int, Field(ge=1, le=125)] | None = None  # registers; required for string
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    byte_order: Order | None = None
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    enum: dict[int, str] | None = None

    def as_point(self) -> PointConfig:
        """The same registers as a point, for the Modbus reader and the mapping stage's decoder."""
        fields = self.model_dump(exclude={"attribute"})
        return PointConfig(measurepoint=self.attribute, **fields)


#: The largest `before` / `after` of a capture: the ring holds `before` in memory.
CAPTURE_MAX_WINDOW_S = 3600.0


class CaptureConfig(Strict):
    """What a device did around an event, as a file that goes with it (`param`): the
    `points`' values from `before` the event fired until `after` it (CSV for now)."""

    points: Annotated[list[str], Field(min_length=1)]
    before: Duration
    after: Duration
    format: Literal["csv"] = "csv"
    param: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

    @field_validator("before", "after")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        if value > CAPTURE_MAX_WINDOW_S:
            raise ValueError(f"{format_duration(value)} is longer than the 1h a capture may span")
        return value


class BitRule(Strict):
    """Fires when a bool point rises (`bit_set`) or falls (`bit_cleared`)."""

    event: str
    rule: Literal["bit_set", "bit_cleared"]
    point: str
    params: dict[str, str | int | float | bool] = {}
    capture: CaptureConfig | None = None


class ThresholdRule(Strict):
    """Fires when a point crosses `above` (or falls under `below`); re-arms past hysteresis."""

    event: str
    rule: Literal["threshold"]
    point: str
    above: float | None = None
    below: float | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    params: dict[str, str | int | float | bool] = {}
    capture: CaptureConfig | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class InSetRule(Strict):
    """Fires when a point's value enters `values` (e.g. fault states)."""

    event: str
    rule: Literal["in_set"]
    point: str
    values: Annotated[list[int | float | str], Field(min_length=1)]
    params: dict[str, str | int | float | bool] = {}
    capture: CaptureConfig | None = None


class ChangeRule(Strict):
    """Fires whenever a point's value changes (not on the first reading)."""

    event: str
    rule: Literal["change"]
    point: str
    params: dict[str, str | int | float | bool] = {}
    capture: CaptureConfig | None = None


EventRule = Annotated[BitRule | ThresholdRule | InSetRule | ChangeRule, Field(discriminator="rule")]


class ServiceParam(Strict):
    type: Literal["int", "float", "bool", "string"] = "float"
    min: float | None = None
    max: float | None = None


class ServiceWrite(Strict):
    """One write of a service: `value` is a literal or `$param` bound from the command."""

    point: str
    value: str | int | float | bool


class ServiceConfig(Strict):
    """A cloud-invokable service: ordered writes, then output points read back."""

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    params: dict[str, ServiceParam] = {}
    writes: list[ServiceWrite] = []
    outputs: list[str] = []


FileParamType = Literal["int", "float", "bool", "string"]


class FileEventConfig(Strict):
    """An event of the model that may carry a file (an outbox drop or a capture).

    `file_param` is the event parameter that gets the uploaded file (`local://...`);
    `params` are the event's other parameters, with their types, which a drop must give.
    The EnOS product model must declare `file_param` file-typed.
    """

    event: Identifier
    file_param: Identifier
    params: dict[Identifier, FileParamType] = {}

    @model_validator(mode="after")
    def _file_param_apart(self) -> FileEventConfig:
        if self.file_param in self.params:
            raise ValueError(f"'{self.file_param}' is the file_param; do not list it in params")
        return self


class DeviceModel(Strict):
    """A reusable device type (`models/<name>.yaml`)."""

    name: str
    description: str | None = None
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    # One timestamp per device and cycle (one EnOS record), or one per request.
    timestamps: Timestamps = Timestamps.CYCLE
    points: Annotated[list[PointConfig], Field(min_length=1)]
    events: list[EventRule] = []
    services: list[ServiceConfig] = []
    attributes: list[AttributePointConfig] = []
    report: ReportConfig | None = None  # default report rule of the model's points
    # Events that carry a file, uploaded over integration.http (outbox drops, captures).
    file_events: list[FileEventConfig] = []

    @model_validator(mode="after")
    def _file_events_once(self) -> DeviceModel:
        ids = [f.event for f in self.file_events]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"file_events declares {', '.join(twice)} more than once")
        return self


# ---------------------------------------------------------------------------- devices


class RegisterConfig(Strict):
    """Register the device in EnOS from the gateway (`thing.device.register`)."""

    name: Annotated[str, Field(min_length=1)]  # the device's display name in EnOS
    timezone: Annotated[str, Field(pattern=r"^[+-](0\d|1[0-4]):[0-5]\d$")] = "+00:00"
    description: str | None = None
    attributes: dict[Identifier, StaticValue] = {}

    _dates = field_validator("attributes", mode="before")(_dates_as_text)


class DeviceConfig(Strict):
    """A Modbus sub-device on a bus, mapped to an EnOS sub-device."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    bus: str
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    model: str  # a model name: models/<model>.yaml
    product_key: Annotated[str, Field(min_length=1)]
    device_key: Annotated[str, Field(min_length=1)]
    device_secret: SecretStr | None = None
    device_secret_file: Path | None = None
    poll_interval: Annotated[Duration, Field(gt=0)] = 5.0
    byte_order: Order | None = None  # None: the model's
    word_order: Order | None = None
    timestamps: Timestamps | None = None  # None: the model's
    enabled: bool = True
    timeout: Annotated[Duration, Field(gt=0)] | None = None  # None: the bus's
    max_registers: Annotated[int, Field(ge=1, le=125)] | None = None  # None: the bus's
    # Some devices only implement FC16: write single registers with FC16 too.
    write_multiple_only: bool = False
    # Read a written point back and compare before answering the cloud 200.
    verify_writes: bool = True
    # Keep polling (and spooling) a sub-device the cloud disabled; published on re-enable.
    poll_when_disabled: bool = False
    # Static EnOS attributes (site, commissioning date); they win over the model's
    # register attributes of the same name.
    attributes: dict[Identifier, StaticValue] = {}
    # EnOS tags (thing.tag.update); they win over the top-level `default_tags`.
    tags: dict[TagKey, StaticValue] = {}
    # No secret yet: the gateway registers the device and keeps the secret EnOS returns.
    # (`registration` in Python: pydantic models have a `register` class method.)
    registration: RegisterConfig | None = Field(default=None, alias="register")

    _static_dates = field_validator("attributes", "tags", mode="before")(_dates_as_text)
    # Report rules of this device: for all its points, and per measurepoint (wins).
    report: ReportConfig | None = None
    point_reports: dict[str, ReportConfig] = {}


# ---------------------------------------------------------------------------- pipeline


class SpoolConfig(Strict):
    path: Path = Path("/var/lib/gatewayd/spool.db")
    max_bytes: Annotated[Size, Field(ge=1 << 20)] = 256 << 20
    synchronous: SyncMode = SyncMode.FULL


class UplinkConfig(Strict):
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 500  # records per message
    # A sample older than this when it is sent goes out as resume (backfill), not post;
    # so does one taken while its sub-device was not logged in (outage, before its login).
    live_window: Annotated[Duration, Field(gt=0)] = 30.0
    # Backlog pacing. The byte budget covers all uplink traffic: live data spends it first
    # and never waits; the backlog drains with what is left (EnOS: about 1 MB/s a device).
    backlog_points_per_second: Annotated[int, Field(ge=1)] = 100_000
    backlog_bytes_per_second: Annotated[Size, Field(ge=1024)] = 900 * 1024
    reply_timeout: Annotated[Duration, Field(gt=0, le=60)] = 30.0
    login_batch_size: Annotated[int, Field(ge=1, le=200)] = 50
    auto_topo: bool = False  # add sub-devices answering 740 to the topology
    # Attributes are read at each login of a sub-device and again this often.
    attributes_interval: Annotated[Duration, Field(gt=0)] = 24 * 3600.0
    # How events that go out as backlog (the rule of resume.batch: older than the live
    # window, or taken before their sub-device's login) reach EnOS: `thing` posts them on
    # the sub-device's thing.event topic like live ones (cloud alarms may fire on them);
    # `integration` imports them as historical events (integration.event.post) over the
    # mode-4 channel of their product (`integration.mqtt`).
    historical_events: HistoricalEvents = HistoricalEvents.THING


class IntegrationHttpConfig(Strict):
    """EnOS HTTP message integration: a service account posting to the integration address.

    `address` and `apigw` are base URLs (`https://host[:port]`); a bare host means https.
    The token service (`apigw`) defaults to the integration address's host.
    """

    address: Annotated[str, Field(min_length=1)]
    apigw: Annotated[str, Field(min_length=1)] | None = None
    org_id: Annotated[str, Field(min_length=1)]
    access_key: Annotated[str, Field(min_length=1)]
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    verify: bool = True  # TLS certificate verification, as for the broker
    ca_file: Path | None = None  # None: the system trust store
    connect_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    # Longest wait for any one read or write of a request (not the whole upload).
    timeout: Annotated[Duration, Field(gt=0)] = 30.0

    @field_validator("address", "apigw")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        problem = base_url_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


def base_url_problem(value: str) -> str | None:
    """Why `value` is not `host[:port]` or `http(s)://host[:port]`, or None when it is."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "https", value
    if scheme not in ("http", "https"):
        return f"scheme {scheme!r} is not http or https"
    host = rest.removesuffix("/")
    if not host or any(c in host for c in "/?#@ "):
        return f"{value!r} is not a base URL like https://host[:port] (no path or query)"
    return None


class IntegrationProductConfig(Strict):
    """One product's message-integration channel: its product secret signs the CONNECT."""

    product_secret: SecretStr | None = None
    product_secret_file: Path | None = None


class IntegrationMqttConfig(Strict):
    """EnOS MQTT message integration (secure mode 4, one connection per product key).

    The broker defaults to the gateway's (`gateway.broker`); `broker` replaces it whole.
    Topics use the SDK spelling `/sys/{productKey}/integration/...` (PROTOCOL.md §7.8,
    integration/PROTOCOL.md §6.2: the docs' spelling without the leading slash is the other
    candidate).
    """

    products: Annotated[dict[Annotated[str, Field(min_length=1)], IntegrationProductConfig],
                        Field(min_length=1)]  # fmt: skip
    broker: BrokerConfig | None = None
    # An idle channel (no backlog events to send) is closed after this long.
    idle_close: Annotated[Duration, Field(gt=0)] = 60.0


class IntegrationConfig(Strict):
    """EnOS message integration channels: HTTP (file events) and MQTT (historical events)."""

    http: IntegrationHttpConfig | None = None
    mqtt: IntegrationMqttConfig | None = None
    # A directory other software drops files into (NAME + NAME.json sidecar) for upload.
    # It must exist (the gateway does not create it: its owner and mode are the site's).
    outbox: Path | None = None
    # Byte cap of the stored file events (payloads and records, dead letters included):
    # beyond it the oldest are dropped and counted, like the spool's rows.
    max_bytes: Annotated[Size, Field(ge=1 << 20)] = 1 << 30


class LoggingConfig(Strict):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.AUTO


class Config(Strict):
    """The whole `gatewayd.yaml`."""

    _default_tag_dates = field_validator("default_tags", mode="before")(_dates_as_text)

    gateway: GatewayConfig
    spool: SpoolConfig = SpoolConfig()
    uplink: UplinkConfig = UplinkConfig()
    logging: LoggingConfig = LoggingConfig()
    integration: IntegrationConfig = IntegrationConfig()
    models_dir: Path = Path("models")  # relative to the config file
    buses: list[BusConfig] = []
    devices: list[DeviceConfig] = []
    # Tags every sub-device carries unless its own `tags` give the key another value.
    default_tags: dict[TagKey, StaticValue] = {}
    # Filled by the loader from `models_dir` (and inline `models:` if given).
    models: dict[str, DeviceModel] = {}
