"""Config: embedded default, every key documented, errors naming file and key, env overrides."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway.config import (
    DEFAULT_CONFIG,
    FREE_TABLES,
    SCHEMA,
    ConfigError,
    available_cores,
    load_config,
    parse_listen_url,
    with_workers,
)
from gateway.policy import EquipmentStatus, Reason


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_embedded_default_lists_every_key() -> None:
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    found: set[str] = set()

    def walk(prefix: str, table: dict[str, object]) -> None:
        for key, value in table.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                if dotted not in FREE_TABLES:
                    walk(dotted, value)  # type: ignore[arg-type]
            else:
                found.add(dotted)

    walk("", data)
    expected = {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    assert found == expected


def test_embedded_default_values(tmp_path: Path) -> None:
    c = load_config(None, env={})
    assert c.source == DEFAULT_CONFIG
    [ep] = c.transport.listen
    assert (ep.transport, ep.host, ep.port) == ("tcp", "127.0.0.1", 3868)
    assert (c.metrics.host, c.metrics.port) == ("127.0.0.1", 9868)
    assert c.state_dir == Path("var") and c.tac.database == Path("var/tac.sqlite")
    assert c.tac.file == DEFAULT_CONFIG.parent / "tac-sample.txt"
    assert c.lists.import_files == (DEFAULT_CONFIG.parent / "lists-sample.csv",)
    assert c.peer.watchdog_interval == 30.0 and c.identity.origin_host == "eir.localdomain"
    assert c.registry.budget == 0.05 and c.registry.database == "var/registry.sqlite"
    assert c.policy.status[Reason.TAC_UNKNOWN] is EquipmentStatus.GREYLISTED
    assert not c.policy.monitor_mode and c.logging.mask_imsi
    assert not c.peer.strict_avp_flags and c.peer.tls_verify_origin_host
    assert c.transport.max_connections == 1024
    assert load_config(None, env={"EIR_DIAMETER_MAX_CONNECTIONS": "0"}).transport.max_connections == 0


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, ""), env={})
    assert c.tac.file is None and c.lists.import_files == ()
    assert c.observations.database == Path("var/observations.sqlite")


# A self-signed P-256 certificate and its key (openssl req -x509 -newkey ec ... -subj /CN=test):
# TLS files are loaded when the configuration is (a bad one names its key).
TEST_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIUbpsxR5eH0qrF4ODUsPqBU+cbmuowCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjExMjgwMDA5MThaFw0yNjExMzAwMDA5MTha
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARtvj17
9IOFbdpZhhLBMvYlhA8npi+bkRdt+ZbJ+yuaGAmYMPsdGVszK/jVKFtwYmRtrLlB
c9iAfj1kBdbhhe+jo1MwUTAdBgNVHQ4EFgQUVkgEhrYvBTfFmemngA4FVh81aFQw
HwYDVR0jBBgwFoAUVkgEhrYvBTfFmemngA4FVh81aFQwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiEApliSnCTwVK0FHVqkMY3wC391qZ11MsoE1HYr
DRj3lc8CIDpoctoL1dp1kerm3QolPcRWiAGjMjiQKxHJRxtnTYp9
-----END CERTIFICATE-----
"""
TEST_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghXBmrEFRRkxM1NVG
NYC1Mmwuf6sst0fvyWemoXuc74KhRANCAARtvj179IOFbdpZhhLBMvYlhA8npi+b
kRdt+ZbJ+yuaGAmYMPsdGVszK/jVKFtwYmRtrLlBc9iAfj1kBdbhhe+j
-----END PRIVATE KEY-----
"""


def test_values_map_onto_settings(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text(TEST_CERT)
    (tmp_path / "key.pem").write_text(TEST_KEY)
    (tmp_path / "decl.json").write_text("x")
    path = write(tmp_path, """
[diameter]
origin_host = "eir1.example.net"
listen = ["tcp://[::1]:3868", "sctp://10.0.0.1", "tls://0.0.0.0:5868"]
tls_cert = "cert.pem"
tls_key = "key.pem"
watchdog_seconds = 6
allowed_networks = ["10.0.0.0/8"]
strict_avp_flags = true
tls_verify_origin_host = false
doic_peers = ["dra*.example.net"]
[state]
directory = "/srv/eir"
[policy]
monitor_mode = true
unknown_equipment = ["tac_unknown"]
[policy.status]
registry_unavailable = "GREYLISTED"
[registry]
budget_seconds = 0.2
seed_files = ["decl.json"]
[registry.extra_headers]
X-Operator = "example"
""")
    c = load_config(path, env={})
    assert [(e.transport, e.host, e.port) for e in c.transport.listen] == [
        ("tcp", "::1", 3868), ("sctp", "10.0.0.1", 3868), ("tls", "0.0.0.0", 5868)]
    assert c.transport.tls_cert == str(tmp_path / "cert.pem")
    assert c.peer.watchdog_interval == 6.0 and isinstance(c.peer.watchdog_interval, float)
    assert c.peer.allowed_networks == ("10.0.0.0/8",)
    assert c.peer.strict_avp_flags and not c.peer.tls_verify_origin_host
    assert c.overload.doic_peers == ("dra*.example.net",)
    assert c.lists.database == Path("/srv/eir/lists.sqlite")
    assert c.policy.monitor_mode and c.policy.unknown_equipment == frozenset({Reason.TAC_UNKNOWN})
    assert c.policy.status[Reason.REGISTRY_UNAVAILABLE] is EquipmentStatus.GREYLISTED
    assert c.registry.budget == 0.2 and c.registry.seed_files == (str(tmp_path / "decl.json"),)
    assert c.registry.extra_headers == (("X-Operator", "example"),)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[diameter]\nwatchdog_second = 30\n", "diameter.watchdog_second", "unknown key"),
        ("[diameterr]\n", "[diameterr]", "unknown section"),
        ("[diameter]\nwatchdog_seconds = 5\n", "diameter.watchdog_seconds", "at least 6"),
        ("[diameter]\nwatchdog_seconds = \"30\"\n", "diameter.watchdog_seconds", "a number"),
        ("[diameter]\nvendor_id = true\n", "diameter.vendor_id", "an integer"),
        ("[diameter]\nlisten = \"tcp://127.0.0.1:3868\"\n", "diameter.listen", "list of strings"),
        ("[diameter]\nlisten = [\"udp://127.0.0.1:3868\"]\n", "diameter.listen", "scheme"),
        ("[diameter]\nlisten = [\"tcp://127.0.0.1:70000\"]\n", "diameter.listen", "port"),
        ("[diameter]\nlisten = [\"tcp://eir.local:3868\"]\n", "diameter.listen", "address"),
        ("[diameter]\nlisten = [\"tls://127.0.0.1\"]\n", "diameter.tls_cert", "tls_key"),
        ("[diameter]\nlisten = []\n", "diameter.listen", "at least one listener"),
        ("[diameter]\nlisten = [\"tcp://127.0.0.1:3868\", \"tcp://127.0.0.1:3868\"]\n",
         "diameter.listen", "listed twice"),
        ("[diameter]\nlisten = [\"tcp://127.0.0.1:3868\", \"tls://127.0.0.1:3868\"]\n",
         "diameter.listen", "listed twice"),
        ("[diameter]\nlisten = [\"tcp://[::1]:3868\", \"tcp://[0:0::1]:3868\"]\n",
         "diameter.listen", "listed twice"),
        ("[diameter]\nlisten = [\"sctp://10.0.0.1:3868\", \"sctp://10.0.0.2,10.0.0.1:3868\"]\n",
         "diameter.listen", "listed twice"),
        ("[diameter]\nlisten = [\"tcp://10.0.0.1,10.0.0.2:3868\"]\n", "diameter.listen",
         "only sctp://"),
        ("[diameter]\nlisten = [\"sctp://10.0.0.1,[::1]:3868\"]\n", "diameter.listen",
         "mixes IPv4 and IPv6"),
        ("[diameter]\nlisten = [\"sctp://10.0.0.1,10.0.0.1:3868\"]\n", "diameter.listen",
         "address twice"),
        ("[diameter]\nlisten = [\"sctp://10.0.0.1,:3868\"]\n", "diameter.listen", "no address"),
        ("[diameter]\nsctp_streams_out = 0\n", "diameter.sctp_streams_out", "between 1 and"),
        ("[diameter]\nsctp_rto_min_seconds = 0\n", "diameter.sctp_rto_min_seconds", "0.001"),
        ("[diameter]\nsctp_rto_min_seconds = 5.0\n", "diameter.sctp_rto_initial_seconds",
         "sctp_rto_min_seconds <= sctp_rto_initial_seconds"),
        ("[diameter]\nsctp_path_max_retransmissions = 0\n",
         "diameter.sctp_path_max_retransmissions", "between 1 and"),
        ("[diameter]\nsctp_extra_addresses = [\"10.0.0.2\"]\n", "diameter.sctp_extra_addresses",
         "unknown key"),
        ("[diameter]\nhost_ip_addresses = [\"10.0.0.300\"]\n", "diameter.host_ip_addresses",
         "not an IP address"),
        ("[diameter]\nallowed_networks = [\"10.0.0.0/33\"]\n", "diameter.allowed_networks",
         "CIDR"),
        ("[metrics]\nlisten = \"127.0.0.1\"\n", "metrics.listen", "ADDRESS:PORT"),
        ("[metrics]\nlisten = \"127.0.0.1:70000\"\n", "metrics.listen", "0-65535"),
        ("[policy]\nunknown_equipment = [\"stolen\"]\n", "policy.unknown_equipment",
         "not a reason"),
        ("[policy.status]\nclean = \"BLACK\"\n", "policy.status.clean", "WHITELISTED"),
        ("[policy.status]\nfoo = \"BLACKLISTED\"\n", "policy.status.foo", "unknown key"),
        ("[registry]\nbackend = \"redis\"\n", "registry.backend", "not one of"),
        ("[registry]\nbudget_ms = 50\n", "registry.budget_ms", "unknown key"),
        ("[logging]\nformat = \"xml\"\n", "logging.format", "not one of"),
        ("[observations]\nqueue_size = 0\n", "observations.queue_size", "greater than 0"),
        ("[shared]\nredis_url = \"http://127.0.0.1:6379\"\n", "shared.redis_url", "redis://"),
        ("[shared]\nbudget_seconds = 0\n", "shared.budget_seconds", "greater than 0"),
        ("[shared]\nredis_url = \"unix:///run/redis.sock\"\nredis_cluster = true\n",
         "shared.redis_url", "naming one node of the cluster"),
        ("[shared]\nredis_url = \"redis://127.0.0.1:7000/2\"\nredis_cluster = true\n",
         "shared.redis_url", "database 0 only"),
        ("[diameter]\nwatchdog_seconds = \n", "", "not valid TOML"),
        # TOML's inf and nan are floats: no duration here is either.
        ("[diameter]\nwatchdog_seconds = inf\n", "diameter.watchdog_seconds", "finite number"),
        ("[n5g_eir]\nretry_after_seconds = nan\n", "n5g_eir.retry_after_seconds",
         "finite number"),
        ("[events]\nsyslog = \"udp://127.0.0.1:514\"\nsyslog_tls_cert = \"gw.toml\"\n",
         "events.syslog_tls_cert", "only for a tls:// syslog"),
        ("[events]\nsyslog = \"tls://127.0.0.1:6514\"\nsyslog_tls_key = \"gw.toml\"\n",
         "events.syslog_tls_key", "needs syslog_tls_cert"),
        ("[events]\nsyslog = \"tls://127.0.0.1:6514\"\nsyslog_tls_cert = \"gw.toml\"\n",
         "events.syslog_tls_cert", "not a PEM certificate"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert key in message and problem in message


@pytest.mark.parametrize(
    ("text", "key"),
    [("[tac]\nfile = \"nope.txt\"\n", "tac.file"),
     ("[lists]\nimport_files = [\"nope.csv\"]\n", "lists.import_files"),
     ("[diameter]\ntls_ca = \"ca.pem\"\n", "diameter.tls_ca")],
)
def test_missing_input_files(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"gw\.toml: {key}: file .* does not exist"):
        load_config(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", env={})


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[diameter]\norigin_host = \"from-file\"\n")
    c = load_config(path, env={
        "EIR_DIAMETER_ORIGIN_HOST": "from-env",
        "EIR_POLICY_MONITOR_MODE": "true",
        "EIR_DIAMETER_WATCHDOG_SECONDS": "12.5",
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:3869, sctp://127.0.0.1:3869",
        "EIR_POLICY_STATUS_TAC_UNKNOWN": "WHITELISTED",
        "EIR_CLONE_DETECTION_THRESHOLD": "3",
        "EIR_REGISTRY_TOKEN": "secret",
        "EIR_SOMETHING_ELSE": "ignored: not a section of ours",
        "PATH": "/bin",
    })
    assert c.identity.origin_host == "from-env" and c.policy.monitor_mode
    assert c.peer.watchdog_interval == 12.5
    assert [e.transport for e in c.transport.listen] == ["tcp", "sctp"]
    assert c.policy.status[Reason.TAC_UNKNOWN] is EquipmentStatus.WHITELISTED
    assert c.clone_detection.threshold == 3 and c.registry.token == "secret"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("EIR_POLICY_MONITOR_MODE", "maybe", "expected true or false"),
        ("EIR_DIAMETER_WATCHDOG_SECONDS", "3", "at least 6"),
        ("EIR_DIAMETER_WATCHDOG_SECONDS", "1e400", "finite number"),
        ("EIR_SHARED_BUDGET_SECONDS", "nan", "finite number"),
        ("EIR_DIAMETER_DUPLICATE_CACHE_SIZE", "1000000000000", "0 to 100000000"),
        ("EIR_DIAMETER_VENDOR_ID", "x", "invalid literal"),
        ("EIR_DIAMETER_ORIGN_HOST", "x", "names no configuration key"),
        ("EIR_DIAMETER_ALLOWED_NETWORKS", "10.0.0.0/8,nonsense", "CIDR"),
        ("EIR_DIAMETER_LISTEN", "", "at least one listener"),
        ("EIR_DIAMETER_LISTEN", " , ", "at least one listener"),
        ("EIR_DIAMETER_LISTEN", "tcp://127.0.0.1:3868,tcp://127.0.0.1:3868", "listed twice"),
        # Checked after the variables are applied: still the variable, not the default file.
        ("EIR_TAC_FILE", "nonexistent.txt", "does not exist"),
        ("EIR_LISTS_IMPORT_FILES", "nope.csv", "does not exist"),
        ("EIR_DIAMETER_WRITE_LOW_WATER_BYTES", "99999999999", "above write_high_water_bytes"),
        ("EIR_DIAMETER_MAX_CONNECTIONS", "-1", "must not be negative"),
    ],
)
def test_env_errors_name_the_variable(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={var: value})
    assert f"environment variable {var}" in str(info.value) and expected in str(info.value)


def test_parse_listen_url_default_ports() -> None:
    assert parse_listen_url("tls://127.0.0.1").port == 5868
    assert parse_listen_url("sctp://[::1]").port == 3868
    with pytest.raises(ValueError):
        parse_listen_url("tcp://127.0.0.1:3868/path")


def test_sctp_multihomed_listener_and_options(tmp_path: Path) -> None:
    """One sctp:// URL lists every local address of a multi-homed endpoint (RFC 4960 §6.4);
    in an EIR_ variable the commas inside a URL do not split the list."""
    c = load_config(None, env={
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:3868, sctp://10.0.0.1,10.0.0.2:3869,"
                               "sctp://[::1],[::2]",
        "EIR_DIAMETER_SCTP_RTO_MIN_SECONDS": "0.2",
        "EIR_DIAMETER_SCTP_HEARTBEAT_INTERVAL_SECONDS": "0",
    })
    tcp, v4, v6 = c.transport.listen
    assert (tcp.transport, tcp.addresses, tcp.port) == ("tcp", ("127.0.0.1",), 3868)
    assert (v4.transport, v4.addresses, v4.port) == ("sctp", ("10.0.0.1", "10.0.0.2"), 3869)
    assert (v6.addresses, v6.port) == (("::1", "::2"), 3868)
    sctp = c.transport.sctp
    assert (sctp.rto_min, sctp.rto_initial, sctp.rto_max) == (0.2, 3.0, 60.0)
    assert sctp.heartbeat_interval == 0 and sctp.nodelay
    assert (sctp.streams_out, sctp.streams_in, sctp.path_max_retransmissions) == (10, 65535, 5)


def test_same_port_on_other_transports_or_port_0_is_allowed(tmp_path: Path) -> None:
    c = load_config(None, env={
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:3868,sctp://127.0.0.1:3868,"
                               "tcp://127.0.0.2:3868,tcp://127.0.0.1:0,tcp://127.0.0.1:0",
    })
    assert len(c.transport.listen) == 5


def test_env_error_after_build_does_not_blame_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"EIR_TAC_FILE": "nonexistent.txt"})
    assert not str(info.value).startswith(str(DEFAULT_CONFIG))
    assert str(info.value).startswith("environment variable EIR_TAC_FILE (tac.file): file ")


def test_where_names_the_variable_or_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    c = load_config(path, env={"EIR_STATE_DIRECTORY": "/x"})
    assert c.where("state.directory") == "environment variable EIR_STATE_DIRECTORY (state.directory)"
    assert c.where("lists.database") == f"{path}: lists.database"


OPENSSL = shutil.which("openssl")


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    assert OPENSSL is not None
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI to make test certificates")
def test_bad_tls_files_name_the_key_and_the_file(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "a")
    other_cert, other_key = _self_signed(tmp_path, "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")

    def error(cert_file: Path, key_file: Path, ca: str = "") -> str:
        text = (f"[diameter]\nlisten = [\"tls://127.0.0.1:0\"]\ntls_cert = \"{cert_file}\"\n"
                f"tls_key = \"{key_file}\"\ntls_ca = \"{ca}\"\n")
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), env={})
        return str(info.value)

    assert load_config(write(tmp_path, f"[diameter]\nlisten = [\"tls://127.0.0.1:0\"]\n"
                             f"tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"), env={})
    message = error(junk, key)
    assert "gw.toml: diameter.tls_cert: " in message and str(junk) in message
    message = error(cert, junk)
    assert "gw.toml: diameter.tls_key: " in message and str(junk) in message
    message = error(cert, other_key)
    assert "diameter.tls_key: " in message and "does not match" in message
    message = error(cert, key, str(junk))
    assert "diameter.tls_ca: " in message and str(junk) in message
    with pytest.raises(ConfigError, match=r"^environment variable EIR_DIAMETER_TLS_KEY "):
        load_config(None, env={"EIR_DIAMETER_LISTEN": "tls://127.0.0.1:0",
                               "EIR_DIAMETER_TLS_CERT": str(other_cert),
                               "EIR_DIAMETER_TLS_KEY": str(junk)})


def test_process_workers_number_auto_and_limits(tmp_path: Path) -> None:
    assert load_config(None, env={}).process.workers == 1
    assert load_config(write(tmp_path, "[process]\nworkers = 3\n"), env={}).process.workers == 3
    auto = load_config(write(tmp_path, "[process]\nworkers = \"auto\"\n"), env={})
    assert auto.process.workers == available_cores() >= 1
    assert load_config(None, env={"EIR_PROCESS_WORKERS": "auto"}).process.workers >= 1
    for text, problem in (("0", "must be 1 to 256"), ("\"many\"", "an integer or \"auto\""),
                          ("true", "an integer or \"auto\"")):
        with pytest.raises(ConfigError, match=f"process.workers: .*{problem}"):
            load_config(write(tmp_path, f"[process]\nworkers = {text}\n"), env={})
    with pytest.raises(ConfigError, match=r"EIR_PROCESS_WORKERS.*invalid literal"):
        load_config(None, env={"EIR_PROCESS_WORKERS": "two"})


def test_workers_option_and_clone_detection(tmp_path: Path) -> None:
    config = load_config(None, env={})
    assert with_workers(config, "4").process.workers == 4
    assert with_workers(config, "auto").process.workers == available_cores()
    with pytest.raises(ConfigError, match="--workers x: must be an integer"):
        with_workers(config, "x")
    with pytest.raises(ConfigError, match="--workers 300: must be 1 to 256"):
        with_workers(config, "300")
    # Each worker would count only the IMSIs it saw itself: refused, naming the key.
    clone = write(tmp_path, "[clone_detection]\nenabled = true\n[process]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r"clone_detection\.enabled: .*2 workers"):
        load_config(clone, env={})
    # ... unless they count together in Redis.
    shared = load_config(clone, env={"EIR_SHARED_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert shared.process.workers == 2 and shared.shared.redis_url.startswith("redis://")
    single = load_config(None, env={"EIR_CLONE_DETECTION_ENABLED": "true"})
    with pytest.raises(ConfigError, match=r"EIR_CLONE_DETECTION_ENABLED.*2 workers"):
        with_workers(single, "2")
