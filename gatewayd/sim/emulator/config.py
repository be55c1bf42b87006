"""The emulator's configuration: products, thing models, devices, topology and options.

Shape of `emulator.yaml` (every section forbids unknown keys, like gatewayd's own config)::

    options:                      # all optional
      online_subdevice_cap: 200
      connect_throttle: {enabled: true, max_connects: 4, window: 2m, block: 5m}
    models:                       # thing models, by name
      meter:
        measurepoints:
          voltage: {type: double, quality: true}
          state: {type: enum, values: [0, 1, 2]}
        events:
          overVoltage: {params: [voltage]}     # params omitted: any params accepted
        tripRecord: {files: [capture]}       # file-typed params (HTTP integration)
    products:
      - {product_key: gwPK, kind: gateway, model: gateway}
      - {product_key: subPK, kind: sub_device, model: meter, product_secret: s3cret}
    devices:
      - {product_key: gwPK, device_key: gwDK, device_secret: gwSecret}
      - {product_key: subPK, device_key: meter1, device_secret: m1Secret, gateway: gwPK/gwDK}
    integration:                  # optional: the HTTP side (`gatewayd emulate --http-port`)
      org_id: o15
      accounts: {ak-gateway: sk-9f2c}

`EmulatorConfig.from_gateway_config(cfg)` derives the same from a gatewayd `Config` and its
device models, so the demo and end-to-end tests need no second file: `integration` from
its `integration.http` (OU and service account), file-typed params from capture rules and
`file_events`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatewayd.config.models import Config, DataType, DeviceModel, PointConfig
from gatewayd.config.units import Duration

#: EnOS thing-model measurepoint types the emulator validates values against.
PointType = Literal["int", "long", "float", "double", "string", "bool", "enum", "array", "struct"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasurepointSpec(_Strict):
    """One measurepoint of a thing model."""

    type: PointType = "double"
    quality: bool = False  # the point accepts {"value": v, "quality": q}
    values: list[int | str] | None = None  # allowed values of an enum point


class EventSpec(_Strict):
    """One event of a thing model; `params=None` accepts any parameter names."""

    params: list[str] | None = None
    # Params of file type: HTTP integration uploads carry them as `local://` files.
    files: list[str] = []


class ThingModel(_Strict):
    """Measurepoints, events and attributes of a product (what 1204 checks against)."""

    measurepoints: dict[str, MeasurepointSpec] = {}
    events: dict[str, EventSpec] = {}
    attributes: list[str] | None = None  # None: any attribute name accepted
    services: list[str] = []  # listed by thing.tsltemplate.get


class ProductSpec(_Strict):
    """An EnOS product: its secret, node type, flags and thing model."""

    product_key: Annotated[str, Field(min_length=1)]
    product_secret: str | None = None
    # gateway: may log in sub-devices; sub_device: may only come in through a gateway
    # (direct CONNECT refused); direct: a plain directly connected device.
    kind: Literal["gateway", "sub_device", "direct"] = "direct"
    dynamic_activation: bool = False
    ssl_only: bool = False  # certificate login required: plain-port CONNECT / login refused
    model: str | None = None  # a name in `models`; None: an empty model


class DeviceSpec(_Strict):
    """A registered device. `gateway: "pk/dk"` puts it in that gateway's topology."""

    product_key: Annotated[str, Field(min_length=1)]
    device_key: Annotated[str, Field(min_length=1)]
    device_secret: str | None = None  # None: not activated yet (dynamic activation only)
    asset_id: str | None = None  # None: derived from the keys
    enabled: bool = True
    gateway: str | None = None

    @property
    def gateway_keys(self) -> tuple[str, str] | None:
        if self.gateway is None:
            return None
        pk, sep, dk = self.gateway.partition("/")
        if not sep or not pk or not dk:
            raise ValueError(f"gateway {self.gateway!r} must be 'productKey/deviceKey'")
        return pk, dk


class ThrottleSpec(_Strict):
    """EnOS' connect throttle: more than `max_connects` in `window` blocks for `block`."""

    enabled: bool = True
    max_connects: Annotated[int, Field(ge=1)] = 4
    window: Duration = 120.0
    block: Duration = 300.0


class OptionsSpec(_Strict):
    online_subdevice_cap: Annotated[int, Field(ge=1)] = 200
    # Reply code for a login over the cap: EnOS documents the cap but not the code.
    online_cap_code: int = 429
    max_topology_size: Annotated[int, Field(ge=1)] = 1000
    max_payload_bytes: Annotated[int, Field(ge=1)] = 512 * 1024
    connect_throttle: ThrottleSpec = ThrottleSpec()
    # Deliver every reply even without a matching SUBSCRIBE (off: like EnOS, replies need one).
    auto_subscribe: bool = False


class IntegrationHttpSpec(_Strict):
    """The HTTP integration channel (`gatewayd emulate --http-port`): the OU and its accounts."""

    org_id: Annotated[str, Field(min_length=1)] = "o-emulated"
    accounts: dict[str, str] = {}  # service accounts: access key → secret key
    token_lifetime: Duration = 7200.0


class EmulatorConfig(_Strict):
    """The whole emulator configuration."""

    options: OptionsSpec = OptionsSpec()
    integration: IntegrationHttpSpec | None = None
    models: dict[str, ThingModel] = {}
    products: list[ProductSpec] = []
    devices: list[DeviceSpec] = []

    @model_validator(mode="after")
    def _references_resolve(self) -> EmulatorConfig:
        products = {p.product_key for p in self.products}
        if len(products) != len(self.products):
            raise ValueError("duplicate product_key in products")
        for product in self.products:
            if product.model is not None and product.model not in self.models:
                raise ValueError(f"product {product.product_key}: unknown model {product.model!r}")
        keys = [(d.product_key, d.device_key) for d in self.devices]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate (product_key, device_key) in devices")
        for device in self.devices:
            if device.product_key not in products:
                raise ValueError(
                    f"device {device.device_key}: unknown product {device.product_key!r}"
                )
            gateway = device.gateway_keys
            if gateway is not None and gateway not in keys:
                raise ValueError(f"device {device.device_key}: unknown gateway {device.gateway!r}")
        return self

    @classmethod
    def load(cls, path: Path) -> EmulatorConfig:
        """Read and validate an `emulator.yaml`."""
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        return cls.model_validate(data)

    @classmethod
    def from_gateway_config(
        cls,
        cfg: Config,
        *,
        gateway_model: ThingModel | None = None,
        options: OptionsSpec | None = None,
    ) -> EmulatorConfig:
        """The cloud side of a gatewayd `Config`: the same gateway, sub-devices, secrets, points.

        Each sub-device product gets the union of the measurepoints of the device models
        used with it. A point's EnOS type follows its Modbus type, its scale/offset (a
        scaled integer arrives as a double) and its enum map (codes and labels). Events
        accept the params gatewayd's event engine sends (see `events_of`). Attributes are
        the models' register attributes, the devices' static ones and those a `register:`
        block gives the device at registration.
        """
        gw = cfg.gateway
        gw_secret = _secret(gw.device_secret, gw.device_secret_file)
        product_secret = _secret(gw.product_secret, gw.product_secret_file)
        if gw.secure_mode == 2 and gw_secret is None:
            raise ValueError("gateway: secure_mode 2 needs device_secret or device_secret_file")
        if gw.secure_mode == 3 and product_secret is None:
            raise ValueError("gateway: secure_mode 3 needs product_secret or product_secret_file")
        models: dict[str, ThingModel] = {"gateway": gateway_model or ThingModel()}
        products: dict[str, ProductSpec] = {
            gw.product_key: ProductSpec(
                product_key=gw.product_key,
                product_secret=product_secret,
                kind="gateway",
                dynamic_activation=gw.secure_mode == 3,
                model="gateway",
            )
        }
        devices = [
            DeviceSpec(
                product_key=gw.product_key,
                device_key=gw.device_key,
                # Mode 3: the device is registered but not activated yet.
                device_secret=gw_secret if gw.secure_mode == 2 else None,
            )
        ]
        merged: dict[str, dict[str, MeasurepointSpec]] = {}
        merged_events: dict[str, dict[str, EventSpec]] = {}
        merged_attributes: dict[str, set[str]] = {}
        merged_services: dict[str, set[str]] = {}
        model_names: dict[str, set[str]] = {}
        for device in cfg.devices:
            secret = _secret(device.device_secret, device.device_secret_file)
            if secret is None and device.registration is None:
                raise ValueError(f"device {device.name}: needs device_secret or device_secret_file")
            model = cfg.models.get(device.model)
            if model is None:
                raise ValueError(f"device {device.name}: unknown model {device.model!r}")
            model_names.setdefault(device.product_key, set()).add(device.model)
            attributes = merged_attributes.setdefault(device.product_key, set())
            attributes.update(a.attribute for a in model.attributes)
            attributes.update(device.attributes)
            if device.registration is not None:
                attributes.update(device.registration.attributes)
            merged_services.setdefault(device.product_key, set()).update(
                s.id for s in model.services
            )
            points = merged.setdefault(device.product_key, {})
            points.update(measurepoints_of(model))
            events = merged_events.setdefault(device.product_key, {})
            for event_id, spec in events_of(model).items():
                known = events.get(event_id)
                params = set(spec.params or ()) | set(known.params or () if known else ())
                files = set(spec.files) | set(known.files if known else ())
                events[event_id] = EventSpec(params=sorted(params), files=sorted(files))
            if secret is None:
                continue  # `register:`: the gateway registers it in this cloud
            devices.append(
                DeviceSpec(
                    product_key=device.product_key,
                    device_key=device.device_key,
                    device_secret=secret,
                    enabled=True,  # `enabled: false` in gatewayd only stops polling
                    gateway=f"{gw.product_key}/{gw.device_key}",
                )
            )
        for product_key, points in merged.items():
            # Named after the gatewayd model when the product uses exactly one.
            used = model_names[product_key]
            name = next(iter(used)) if len(used) == 1 else f"product:{product_key}"
            if name in models:
                name = f"product:{product_key}"
            models[name] = ThingModel(
                measurepoints=points,
                events=merged_events[product_key],
                attributes=sorted(merged_attributes[product_key]),
                services=sorted(merged_services[product_key]),
            )
            products.setdefault(
                product_key,
                ProductSpec(
                    product_key=product_key,
                    kind="sub_device",
                    model=name,
                    # Its integration channel (mode 4) signs with this secret.
                    product_secret=_integration_secret(cfg, product_key),
                ),
            )
        return cls(
            options=options or OptionsSpec(),
            integration=integration_of(cfg),
            models=models,
            products=list(products.values()),
            devices=devices,
        )


def integration_of(cfg: Config) -> IntegrationHttpSpec | None:
    """The HTTP side of a gatewayd config's cloud: its OU and its one service account."""
    http = cfg.integration.http
    if http is None:
        return None
    secret = _secret(http.secret_key, http.secret_key_file)
    if secret is None:
        raise ValueError("integration.http: needs secret_key or secret_key_file")
    return IntegrationHttpSpec(org_id=http.org_id, accounts={http.access_key: secret})


def events_of(model: DeviceModel) -> dict[str, EventSpec]:
    """The EnOS events a gatewayd device model fires, with the params gatewayd sends.

    gatewayd's event engine sends ``measurepoint`` and ``value`` plus the rule's own
    `params`; several rules may fire the same event id (e.g. one per phase). A capture's
    `param` and a `file_events` entry's `file_param` are file-typed (the HTTP integration
    uploads them as files); a `file_events` entry's other params are its declared ones.
    """
    params: dict[str, set[str]] = {}
    files: dict[str, set[str]] = {}
    for rule in model.events:
        params.setdefault(rule.event, {"measurepoint", "value"}).update(rule.params)
        if rule.capture is not None:
            params[rule.event].add(rule.capture.param)
            files.setdefault(rule.event, set()).add(rule.capture.param)
    for declared in model.file_events:
        params.setdefault(declared.event, set()).update({declared.file_param, *declared.params})
        files.setdefault(declared.event, set()).add(declared.file_param)
    return {
        event: EventSpec(params=sorted(names), files=sorted(files.get(event, ())))
        for event, names in params.items()
    }


def measurepoints_of(model: DeviceModel) -> dict[str, MeasurepointSpec]:
    """The EnOS measurepoints a gatewayd device model produces."""
    return {point.measurepoint: _point_spec(point) for point in model.points}


def _point_spec(point: PointConfig) -> MeasurepointSpec:
    if point.enum is not None:
        # gatewayd may send the raw code or its label; both are members of the enum.
        values: list[int | str] = [*point.enum.keys(), *point.enum.values()]
        return MeasurepointSpec(type="enum", values=values, quality=point.quality)
    if point.type is DataType.BOOL:
        kind: PointType = "bool"
    elif point.type is DataType.STRING:
        kind = "string"
    elif point.type.is_integer and point.scale == 1.0 and point.offset == 0.0:
        kind = "long"
    else:
        kind = "double"
    return MeasurepointSpec(type=kind, quality=point.quality)


def _integration_secret(cfg: Config, product_key: str) -> str | None:
    """The product secret `integration.mqtt` gives `product_key`, if any."""
    mqtt = cfg.integration.mqtt
    product = None if mqtt is None else mqtt.products.get(product_key)
    if product is None:
        return None
    return _secret(product.product_secret, product.product_secret_file)


def _secret(value: object, path: Path | None) -> str | None:
    if value is not None:
        get = getattr(value, "get_secret_value", None)
        return str(get() if get is not None else value)
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return None
