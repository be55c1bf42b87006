"""EnOS reply codes (PROTOCOL.md §4, §3.7) and what the uplink should do about each.

`ReplyCode` names every documented cloud reply code, the SDKs' transport/command codes, and
gatewayd's own device-side error codes (>= 2000, as the SDKs ask applications to use) for
replies to cloud commands. `classify(code)` maps any integer to a `Disposition` following the
"Retry?" column of §4:

- SUCCESS: 200.
- SPLIT: 1008 (message over 512 KB) -- split the batch and resend.
- RELOGIN: 1009 (topic not writable / device not logged in) and 1212 (sub-device offline in
  a batch) -- log the sub-device in again, then resend (or resend as resume with
  ``allowOfflineSubDevice``).
- RETRY: transient -- no reply (6205/6305 timeouts), 400 and 5xx internal errors, 429, the
  1000-1099 transport family, 714 (deviceKey generation failed, "yes, later").
- PERMANENT: validation/format/config errors (7xx, 12xx, 1257, 1101/1102, device-defined
  >= 2000 ...) -- do not retry; dead-letter the data with the reply.

Codes nobody documented are classified by family: inside the validation/config families
(6xx-9xx product/device/data/model, 11xx-12xx) they are PERMANENT; anything else is RETRY,
so an unforeseen transient condition (e.g. a new throttling code) never loses data. The
spool's byte cap bounds what endless retries can cost.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ReplyCode(IntEnum):
    """Every code in the spec (cloud replies, SDK codes, command replies)."""

    SUCCESS = 200

    # Common (§4)
    MESSAGE_TOO_LARGE = 1008
    NO_WRITE_PERMISSION = 1009
    PAYLOAD_FORMAT_ERROR = 1220
    PAYLOAD_EMPTY = 1251
    METHODS_NOT_CONSISTENT = 1260

    # Login / activation / register
    DEVICE_NOT_EXIST = 705
    DEVICE_DISABLED = 723
    NOT_SUB_DEVICE_OF_GATEWAY = 740
    SIGN_CHECK_FAILED = 742
    SSL_LOGIN_REQUIRED = 746
    DYNAMIC_ACTIVATE_NOT_ALLOWED = 770
    SUB_DEVICE_DIRECT_CONNECT = 771
    DEVICE_KEY_EXISTS = 702
    DEVICE_KEY_GENERATE_FAILED = 714
    PRODUCT_DEVICE_QUOTA = 739

    # Topology
    TOPO_ADD_FAILED = 1255
    TOPO_REMOVE_FAILED = 1256
    PARSE_ERROR = 1200

    # Data
    MODEL_VALIDATE_FAILED = 1204
    MEASUREPOINT_FORMAT_ERROR = 1206
    ATTRIBUTE_UPDATE_FORMAT_ERROR = 1207
    ATTRIBUTE_QUERY_FORMAT_ERROR = 1208
    ATTRIBUTE_DELETE_FORMAT_ERROR = 1209
    NO_SUB_DEVICE_PERMISSION = 1212
    INTEGRATION_DEVICE_NOT_FOUND = 1257

    # SDK code families (JAVA ResponseCode) and Alink-heritage codes (PY ResponseCode)
    PRODUCT_ERRORS = 600
    DEVICE_ERRORS = 700
    DATA_ERRORS = 800
    MODEL_ERRORS = 900
    TRANSPORT_ERRORS = 1000
    CLIENT_ERRORS = 1100
    INTERNAL_ERROR = 400
    AUTH_ERROR = 401
    DEVICE_NOT_EXISTS = 402
    TOO_MANY_REQUESTS = 429
    PARAMETER_ERROR = 460
    HANDLER_EXECUTION_FAILED = 500
    SERVER_TIMEOUT = 6205
    PAYLOAD_MUST_BE_JSON = 6207
    LOCAL_TIMEOUT = 6305
    RRPC_HANDLER_NOT_FOUND = 10001
    DEVICE_DEFINED_ERROR = 100000

    # Replies to cloud commands (§3.7)
    COMMAND_HANDLER_NOT_REGISTERED = 1101
    COMMAND_HANDLER_FAILED = 1102
    USER_DEFINED = 2000

    # gatewayd's own device-side codes (>= 2000, documented in the README's command section)
    COMMAND_MALFORMED = 2001  # not JSON, not an object, no id, wrong field types
    COMMAND_METHOD_MISMATCH = 2002  # `method` does not belong to the topic
    COMMAND_INVALID_PARAMS = 2003  # `params` of the wrong shape for the command
    POINT_UNKNOWN = 2004  # no such measurepoint/service on this device
    POINT_NOT_WRITABLE = 2005  # the model does not mark the point writable
    VALUE_OUT_OF_RANGE = 2006  # outside the point's declared range / type
    DEVICE_WRITE_FAILED = 2007  # the Modbus write failed (exception, timeout)
    SUB_DEVICE_UNKNOWN = 2008  # the command's device is not a sub-device configured here
    SUB_DEVICE_DISABLED = 2009  # disabled (config or combine.disable) or deleted by the cloud
    SUB_DEVICE_NOT_LOGGED_IN = 2010  # not logged in on the current session
    DEVICE_OFFLINE = 2011  # the Modbus device does not answer, or its bus is down
    COMMAND_TIMEOUT = 2012  # the bus was too busy to finish the command before its deadline
    PARTIAL_FAILURE = 2013  # some points were written, others failed (see the reply data)
    WRITE_NOT_VERIFIED = 2014  # written, but the device reads back a different value
    DEVICE_READ_FAILED = 2015  # reading points failed (exception, undecodable, non-finite)
    COMMAND_OVERLOADED = 2016  # too many commands pending (for this device): nothing written
    ACTIVATION_REFUSED = 2017  # thing.activate.info not expected (mode 2, other keys, done)


class Disposition(Enum):
    """What to do with the data a reply answered."""

    SUCCESS = "success"
    RETRY = "retry"
    RELOGIN = "relogin"
    SPLIT = "split"
    PERMANENT = "permanent"


_EXPLICIT: dict[int, Disposition] = {
    ReplyCode.SUCCESS: Disposition.SUCCESS,
    ReplyCode.MESSAGE_TOO_LARGE: Disposition.SPLIT,
    ReplyCode.NO_WRITE_PERMISSION: Disposition.RELOGIN,
    ReplyCode.NO_SUB_DEVICE_PERMISSION: Disposition.RELOGIN,
    ReplyCode.DEVICE_KEY_GENERATE_FAILED: Disposition.RETRY,
    ReplyCode.INTERNAL_ERROR: Disposition.RETRY,
    ReplyCode.TOO_MANY_REQUESTS: Disposition.RETRY,
    ReplyCode.SERVER_TIMEOUT: Disposition.RETRY,
    ReplyCode.LOCAL_TIMEOUT: Disposition.RETRY,
    ReplyCode.AUTH_ERROR: Disposition.PERMANENT,
    ReplyCode.DEVICE_NOT_EXISTS: Disposition.PERMANENT,
    ReplyCode.PARAMETER_ERROR: Disposition.PERMANENT,
    ReplyCode.PAYLOAD_MUST_BE_JSON: Disposition.PERMANENT,
    ReplyCode.RRPC_HANDLER_NOT_FOUND: Disposition.PERMANENT,
    ReplyCode.DEVICE_DEFINED_ERROR: Disposition.PERMANENT,
}


def classify(code: int) -> Disposition:
    """The disposition of a reply `code` (see the module docstring for the rules)."""
    explicit = _EXPLICIT.get(code)
    if explicit is not None:
        return explicit
    if 500 <= code <= 599 or 1000 <= code <= 1099:
        return Disposition.RETRY
    if 600 <= code <= 999 or 1100 <= code <= 1299 or code >= 2000:
        return Disposition.PERMANENT
    return Disposition.RETRY


def describe(code: int) -> str:
    """A human name for `code` for logs, e.g. ``1204 MODEL_VALIDATE_FAILED``."""
    try:
        return f"{code} {ReplyCode(code).name}"
    except ValueError:
        return f"{code} (undocumented)"
