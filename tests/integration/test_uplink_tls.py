"""TLS to the broker with real parts: openssl-made certificates and a TLS mosquitto listener.

Each test module run makes a throwaway CA, a server certificate for 127.0.0.1/localhost and
a client certificate (plus a second, unrelated CA) with the `openssl` command line, and runs
Debian mosquitto with a plain listener (for the paho responder playing the cloud) and a
mutual-TLS listener (`require_certificate true`) for gatewayd.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.config.models import TlsConfig
from gatewayd.enos.session import BrokerUnavailable, Endpoint, GatewaySession, tls_context
from gatewayd.systemd import Notifier
from tests.integration.mosquitto_fixtures import MOSQUITTO, Mosquitto, _launch
from tests.integration.test_session_transport import Responder
from tests.support import async_wait_until, free_port

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
TOPIC = "/sys/gwPK/gwDK/thing/measurepoint/post/batch"


@dataclass(frozen=True)
class Pki:
    """Paths of the throwaway certificates and keys."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing of ours


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(tmp: Path, name: str) -> None:
    _openssl(
        "req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp,
    )  # fmt: skip


def _make_leaf(tmp: Path, name: str, cn: str, extensions: str) -> None:
    """A key and a certificate for `cn` signed by `ca`, with the given v3 extensions."""
    _openssl("req", "-new", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=tmp)  # fmt: skip
    (tmp / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=tmp,
    )  # fmt: skip


def make_pki(tmp: Path) -> Pki:
    """CA, server (CN/SAN 127.0.0.1 and localhost) and client certificates, in `tmp`."""
    if not Path(OPENSSL).exists():
        pytest.fail("openssl is not installed")
    tmp.mkdir(parents=True, exist_ok=True)
    _make_ca(tmp, "ca")
    _make_ca(tmp, "other-ca")
    _make_leaf(
        tmp, "server", "127.0.0.1",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )  # fmt: skip
    _make_leaf(tmp, "client", "gwDK", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return Pki(
        ca=tmp / "ca.crt",
        server_cert=tmp / "server.crt",
        server_key=tmp / "server.key",
        client_cert=tmp / "client.crt",
        client_key=tmp / "client.key",
        other_ca=tmp / "other-ca.crt",
    )


@dataclass
class TlsBroker:
    """mosquitto with a plain listener (`port`) and a mutual-TLS listener (`tls_port`)."""

    broker: Mosquitto
    tls_port: int
    pki: Pki

    @property
    def port(self) -> int:
        return self.broker.port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One set of certificates for the module (openssl runs take a moment)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    """A running mosquitto with a TLS listener that requires a client certificate."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (make setup installs it with apt-get)")
    plain, tls = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    lines = [
        "persistence false",
        "allow_anonymous true",
        "user root",
        f"listener {plain} 127.0.0.1",
    ]
    lines += [
        f"listener {tls} 127.0.0.1",
        f"cafile {pki.ca}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
        "use_identity_as_username false",
    ]
    conf.write_text("\n".join(lines) + "\n")
    broker = Mosquitto(plain, conf, _launch(conf, plain))
    yield TlsBroker(broker, tls, pki)
    if broker.process.poll() is None:
        broker.stop()


def broker_log(broker: TlsBroker) -> str:
    return (broker.broker.conf.parent / "mosquitto.log").read_text()


async def _request_reply(port: int, tls: TlsConfig, *, connect_timeout: float = 5) -> bytes:
    """Connect over `tls`, send one request, return the reply's bytes."""
    target = Endpoint(
        "127.0.0.1", port, "gw-tls", "gwDK&gwPK", "pw", connect_timeout=connect_timeout
    )
    async with GatewaySession(target, tls=tls_context(tls), reply_timeout=10) as session:
        reply = await session.request(TOPIC, "41", b'{"id":"41","method":"m","params":[]}')
    return reply.payload


async def test_mutual_tls_connects_and_correlates_a_reply(tls_broker: TlsBroker) -> None:
    """CA + client certificate: the session connects over TLS and gets its reply."""
    pki = tls_broker.pki
    responder = await asyncio.to_thread(Responder, tls_broker.port)
    try:
        tls = TlsConfig(
            enabled=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
        )
        payload = await _request_reply(tls_broker.tls_port, tls)
        assert payload == b'{"id": "41", "code": 200, "data": {}, "message": ""}'
        assert [(topic, body["id"]) for topic, body in responder.seen] == [(TOPIC, "41")]
    finally:
        responder.close()


@pytest.mark.parametrize("trust", ["system store", "wrong CA"])
async def test_verification_is_on_by_default(tls_broker: TlsBroker, trust: str) -> None:
    """A server certificate the trust store does not vouch for: BrokerUnavailable, no hang."""
    pki = tls_broker.pki
    tls = TlsConfig(
        enabled=True,
        ca_file=None if trust == "system store" else pki.other_ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
    )
    assert tls.verify is True
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.wait_for(_request_reply(tls_broker.tls_port, tls), 15)


async def test_verify_false_accepts_the_self_signed_server(tls_broker: TlsBroker) -> None:
    """`verify: false` (explicit) connects to a server no trusted CA signed."""
    pki = tls_broker.pki
    responder = await asyncio.to_thread(Responder, tls_broker.port)
    try:
        tls = TlsConfig(
            enabled=True, verify=False, cert_file=pki.client_cert, key_file=pki.client_key
        )
        payload = await _request_reply(tls_broker.tls_port, tls)
        assert b'"id": "41"' in payload
        assert len(responder.seen) == 1
    finally:
        responder.close()


async def test_missing_client_certificate_is_refused(tls_broker: TlsBroker) -> None:
    """require_certificate: the broker drops a client without a certificate; BrokerUnavailable."""
    tls = TlsConfig(enabled=True, ca_file=tls_broker.pki.ca)
    # TLS 1.3: the client learns of the refusal only when no CONNACK comes, so the bound is
    # the connect timeout (aiomqtt ignores a disconnect before CONNACK).
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(_request_reply(tls_broker.tls_port, tls, connect_timeout=1), 15)
    assert "peer did not return a certificate" in broker_log(tls_broker)


async def test_plain_tcp_to_the_tls_port_is_unavailable(tls_broker: TlsBroker) -> None:
    """TLS disabled against a TLS listener: BrokerUnavailable within the connect timeout."""
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(
            _request_reply(tls_broker.tls_port, TlsConfig(), connect_timeout=1), 15
        )
    assert "wrong version number" in broker_log(tls_broker)


# ------------------------------------------------------------------ through the daemon


def write_config(tmp: Path, port: int, tls: dict[str, object]) -> Path:
    """A gatewayd.yaml with no buses: only the uplink runs."""
    config = {
        "gateway": {
            "product_key": "gwPK",
            "device_key": "gwDK",
            "device_secret": "gwSecret",
            "broker": {"host": "127.0.0.1", "port": port, "tls": tls},
        },
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"reply_timeout": "2s"},
    }
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def running_daemon(path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(path, load_config(path), notifier=Notifier(environ={}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_daemon_tls_config_reaches_the_session(tls_broker: TlsBroker, tmp_path: Path) -> None:
    """gateway.broker.tls from YAML: the daemon's uplink connects to the mutual-TLS listener."""
    pki = tls_broker.pki
    tls = {"enabled": True, "ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
           "key_file": str(pki.client_key)}  # fmt: skip
    async with running_daemon(write_config(tmp_path, tls_broker.tls_port, tls)) as daemon:
        assert daemon.uplink is not None
        status = daemon.uplink.status
        await async_wait_until(lambda: status.state == "connected", 15, "TLS CONNECT")
        assert (status.connects, status.refused, status.last_error) == (1, 0, "")
    # The broker saw the gateway's EnOS identity arrive on the TLS listener.
    lines = broker_log(tls_broker).splitlines()
    connected = [n for n, line in enumerate(lines) if "u'gwDK&gwPK'" in line]
    assert len(connected) == 1
    assert f"on port {tls_broker.tls_port}." in lines[connected[0] - 1]


async def test_daemon_with_a_wrong_ca_stays_disconnected(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """A CA that did not sign the server: the uplink reports a failed connect, never connects."""
    pki = tls_broker.pki
    tls = {"enabled": True, "ca_file": str(pki.other_ca), "cert_file": str(pki.client_cert),
           "key_file": str(pki.client_key)}  # fmt: skip
    async with running_daemon(write_config(tmp_path, tls_broker.tls_port, tls)) as daemon:
        assert daemon.uplink is not None
        status = daemon.uplink.status
        await async_wait_until(lambda: status.last_error, 15, "the failed CONNECT")
        assert status.state.startswith(("disconnected", "reconnecting", "connecting"))
        assert "CERTIFICATE_VERIFY_FAILED" in status.last_error
        assert status.refused == 0


# ------------------------------------------------------------------ session shutdown


async def test_request_cancelled_as_its_reply_arrives_ends_cancelled(tls_broker: TlsBroker) -> None:
    """Cancel a request in the tick its reply is matched: it ends cancelled (no 3.11 swallow)."""
    target = Endpoint("127.0.0.1", tls_broker.port, "gw-plain", "gwDK&gwPK", "pw")
    async with GatewaySession(target, reply_timeout=10) as session:
        task = asyncio.create_task(session.request(TOPIC, "5", b'{"id":"5"}'))
        # The exact race needs the reply matched by hand, in the same tick as the cancel.
        await async_wait_until(lambda: session._pending, 10, "the request waiting")
        session._resolve(TOPIC + "_reply", b'{"id":"5","code":200,"data":{}}')
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done == {task}
        assert task.cancelled()
        assert session._pending == {}


async def test_daemon_on_plain_tcp_to_the_tls_port_hints_at_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """TLS off against the TLS listener: the CONNECT is counted, gets no CONNACK, and the one
    connect-failure warning says the port may expect TLS."""
    path = write_config(tmp_path, tls_broker.tls_port, {})
    document = yaml.safe_load(path.read_text())
    document["gateway"]["broker"]["connect_timeout"] = "1s"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with structlog.testing.capture_logs() as captured:
        async with running_daemon(path) as daemon:
            assert daemon.uplink is not None
            status = daemon.uplink.status
            await async_wait_until(lambda: status.last_error, 30, "the failed CONNECT")
            error, connects = status.last_error, status.connects
    hint = f"if port {tls_broker.tls_port} expects TLS, set gateway.broker.tls.enabled: true"
    assert hint in error
    assert connects >= 1
    hinted = [e for e in captured if e["log_level"] == "warning" and hint in e["event"]]
    assert len(hinted) == 1
