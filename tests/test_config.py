"""The configuration read as a user writes it: flags, GATEWAY_*/PROCESSOR_* variables, defaults.

Pure logic: no sockets, no processes (tests/test_cli.py runs the programs themselves).
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gateway import options
from gateway.config import (
    GROUPS,
    PREFIX,
    GatewayConfig,
    build_parser,
    dev_stack_refusal,
    load_config,
    parse_config,
)
from gateway.config_docs import configuration_markdown
from gateway.errors import ConfigError
from gateway.mqtt_link import MqttSettings
from gateway.processor import ProcessorSettings
from gateway.processor.config import (
    PROCESSOR_PREFIX,
    ProcessorConfig,
    build_processor_parser,
    load_processor_config,
    parse_processor_config,
)

ROOT = Path(__file__).resolve().parent.parent
NO_ENV: dict[str, str] = {}


def processor(argv: list[str], environ: dict[str, str] | None = None) -> ProcessorConfig:
    return parse_processor_config(argv, environ or {}, build_processor_parser())


def test_no_flags_and_no_variables_give_the_declared_defaults() -> None:
    config = parse_config([], NO_ENV)
    assert config == GatewayConfig()
    assert config.given == frozenset()
    assert config.server.port == 8080 and config.mqtt.port == 1883
    assert config.embedded and config.mqtt.address is None


def test_flags() -> None:
    config = parse_config(
        [
            "--port",
            "9000",
            "--mqtt-host",
            "broker",
            "--subprotocols",
            "ocpp1.6,ocpp2.0.1",
            "--processor",
            "--base-path",
            "/ocpp/",
            "--tls-terminated-upstream",
            "--call-timeout",
            "0",
        ],
        NO_ENV,
    )
    assert config.server.port == 9000
    assert config.mqtt.address == ("broker", 1883)
    assert config.server.subprotocols == ("ocpp1.6", "ocpp2.0.1")
    assert config.processing.run
    assert config.server.base_path == "/ocpp"
    assert config.tls.terminated_upstream and config.tls.secure_transport and not config.tls.direct
    assert config.limits.call_timeout == 0
    assert config.given == {
        "port",
        "mqtt_host",
        "subprotocols",
        "processor",
        "base_path",
        "tls_terminated_upstream",
        "call_timeout",
    }


def test_environment_variables() -> None:
    config = parse_config(
        [],
        {
            "GATEWAY_PORT": "9001",
            "GATEWAY_IOT_ENDPOINT": "abc-ats.iot.eu-west-1.amazonaws.com",
            "GATEWAY_CERT_FILE": __file__,
            "GATEWAY_KEY_FILE": __file__,
            "GATEWAY_TLS_TERMINATED_UPSTREAM": "yes",
            "GATEWAY_PROCESSOR": "false",
            "GATEWAY_SUBPROTOCOLS": " ocpp1.6 , ocpp2.0.1 ",
            "GATEWAY_REGISTRY_RATE": "12.5",
            "GATEWAY_DATA_DIR": "~/somewhere",
            "GATEWAY_MQTT_PASSWORD": "s3cret",
        },
    )
    assert config.server.port == 9001
    assert config.mqtt.address == ("abc-ats.iot.eu-west-1.amazonaws.com", 8883)
    assert config.mqtt.cert_file == Path(__file__)
    assert config.tls.terminated_upstream
    assert config.processing.processor is False and not config.processing.run
    assert config.server.subprotocols == ("ocpp1.6", "ocpp2.0.1")
    assert config.registry.rate == 12.5
    assert config.devstack.data_dir == Path.home() / "somewhere"
    assert config.mqtt.password == "s3cret"


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    environ = {"GATEWAY_PORT": "9001", "GATEWAY_HOST": "0.0.0.0", "GATEWAY_PROCESSOR": "1"}
    config = parse_config(["--port", "9002", "--no-processor"], environ)
    assert config.server.port == 9002  # flag over variable
    assert config.server.host == "0.0.0.0"  # variable over default
    assert config.processing.processor is False  # --no-processor over GATEWAY_PROCESSOR=1
    assert config.limits.max_connections == GatewayConfig.max_connections  # default


def test_an_empty_variable_counts_as_unset() -> None:
    assert parse_config([], {"GATEWAY_PORT": "", "GATEWAY_MQTT_HOST": ""}) == GatewayConfig()


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "70000"], {}, "--port must be between 0 and 65535"),
        ([], {"GATEWAY_PORT": "-1"}, "GATEWAY_PORT must be between 0 and 65535"),
        ([], {"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT: invalid int value: 'eighty'"),
        ([], {"GATEWAY_CALL_TIMEOUT": "nan"}, "GATEWAY_CALL_TIMEOUT: invalid float value: 'nan'"),
        (["--mqtt-port", "65536"], {}, "--mqtt-port must be between 0 and 65535"),
        (["--fakeiot-api-port", "-5"], {}, "--fakeiot-api-port must be between 0 and 65535"),
        (["--base-path", "ocpp"], {}, "--base-path must look like /ocpp"),
        (["--base-path", "/a b"], {}, "--base-path must look like /ocpp"),
        (["--base-path", "/a//b"], {}, "--base-path must look like /ocpp"),
        (["--subprotocols", "ocpp1.5"], {}, "--subprotocols has unknown ['ocpp1.5']"),
        (["--subprotocols", ","], {}, "--subprotocols has unknown empty list"),
        (["--max-frame-size", "1000"], {}, "--max-frame-size must be >= 1024"),
        (["--handshake-timeout", "0"], {}, "--handshake-timeout must be > 0"),
        (["--ping-interval", "-1"], {}, "--ping-interval must be >= 0"),
        (["--pong-timeout", "0"], {}, "--pong-timeout must be > 0"),
        (["--max-connections", "0"], {}, "--max-connections must be >= 1"),
        (["--max-message-rate", "-1"], {}, "--max-message-rate must be >= 0"),
        (["--max-message-burst", "0"], {}, "--max-message-burst must be >= 1"),
        (["--cp-reconnect-rate", "-1"], {}, "--cp-reconnect-rate must be >= 0"),
        (["--cp-reconnect-burst", "0"], {}, "--cp-reconnect-burst must be >= 1"),
        (["--call-timeout", "-1"], {}, "--call-timeout must be >= 0 (0: never)"),
        (["--close-timeout", "0"], {}, "--close-timeout must be > 0"),
        (["--drain-timeout", "-1"], {}, "--drain-timeout must be >= 0"),
        (
            ["--max-backlog-bytes", "2000"],
            {},
            "--max-backlog-bytes must be at least --max-frame-size",
        ),
        (["--mqtt-keepalive", "-1"], {}, "--mqtt-keepalive must be >= 0"),
        (["--mqtt-connect-rate", "-1"], {}, "--mqtt-connect-rate must be >= 0"),
        (["--mqtt-connect-burst", "0"], {}, "--mqtt-connect-burst must be >= 1"),
        (["--mqtt-connect-max-wait", "-1"], {}, "--mqtt-connect-max-wait must be >= 0"),
        (["--registry-ttl", "-1"], {}, "--registry-ttl must be >= 0"),
        (["--registry-negative-ttl", "-1"], {}, "--registry-negative-ttl must be >= 0"),
        (["--registry-rate", "0"], {}, "--registry-rate must be > 0"),
        (["--heartbeat-interval", "0"], {}, "--heartbeat-interval must be >= 1"),
        (
            ["--gc-full-interval", "-1"],
            {},
            "--gc-full-interval must be >= 0 (0: CPython's default)",
        ),
        (
            ["--gc-young-interval", "-0.1"],
            {},
            "--gc-young-interval must be >= 0 (0: CPython's allocation counter only)",
        ),
        (["--log-level", "LOUD"], {}, "--log-level must be one of DEBUG, INFO, WARNING, ERROR"),
        (["--cert-binding", "x"], {}, "--cert-binding must be one of cn-or-san, cn, san"),
        (
            [],
            {"GATEWAY_MIN_SECURITY_PROFILE": "5"},
            "GATEWAY_MIN_SECURITY_PROFILE must be one of 0, 1, 2, 3, not 5",
        ),
        ([], {"GATEWAY_PROCESSOR": "maybe"}, "GATEWAY_PROCESSOR: expected true or false"),
        (
            ["--certfile", "/no/such.pem", "--keyfile", __file__],
            {},
            "--certfile names no such file: /no/such.pem",
        ),
        (
            ["--keyfile", "/no/key.pem"],
            {"GATEWAY_CERTFILE": __file__},
            "--keyfile names no such file: /no/key.pem",
        ),
        (
            ["--keyfile", __file__],
            {"GATEWAY_CERTFILE": "/no/cert.pem"},
            "GATEWAY_CERTFILE names no such file: /no/cert.pem",
        ),
        (["--certfile", __file__], {}, "--certfile and --keyfile go together"),
        (["--iot-endpoint", "host:99999"], {}, "--iot-endpoint must be HOST[:PORT]"),
        (["--iot-endpoint", ":8883"], {}, "--iot-endpoint must be HOST[:PORT]"),
        (["--iot-endpoint", "h"], {}, "--iot-endpoint needs --cert-file and --key-file"),
        (
            ["--iot-endpoint", "h", "--mqtt-host", "m"],
            {},
            "--iot-endpoint and --mqtt-host are alternatives",
        ),
        (
            ["--mqtt-host", "m", "--ca-file", __file__],
            {},
            "--ca-file, --cert-file and --key-file are for --iot-endpoint",
        ),
        (["--cert-file", __file__], {}, "--cert-file and --key-file go together"),
        (
            ["--client-ca-file", __file__],
            {},
            "--client-ca-file (security profile 3) needs --certfile/--keyfile (wss://) and --cpo-name",
        ),
        (["--iot-api-url", "localhost:8090"], {}, "--iot-api-url must be a URL such as http://"),
        (
            ["--mqtt-password", "a", "--mqtt-password-file", __file__],
            {},
            "give --mqtt-password or --mqtt-password-file, not both",
        ),
        (
            ["--processor-mqtt-password-file", "/no/such/file"],
            {},
            "cannot read --processor-mqtt-password-file /no/such/file: No such file or directory",
        ),
    ],
)
def test_every_bad_value_is_named(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, environ)
    assert message in str(caught.value)


def test_load_config_exits_with_usage_and_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_config(["--close-timeout", "0"], NO_ENV)
    assert caught.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: python -m gateway [options]")
    assert lines[1:] == ["python -m gateway: error: --close-timeout must be > 0"]
    with pytest.raises(SystemExit):
        load_config(["--port", "eighty"], NO_ENV)
    assert "argument --port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_password_files_are_read_and_secrets_never_shown(tmp_path: Path) -> None:
    (tmp_path / "gw").write_text("device-secret\n")
    (tmp_path / "backend").write_text("backend-secret\n")
    config = parse_config(
        [
            "--mqtt-host",
            "m",
            "--mqtt-password-file",
            str(tmp_path / "gw"),
            "--processor-mqtt-password-file",
            str(tmp_path / "backend"),
        ],
        NO_ENV,
    )
    assert config.mqtt.password == "device-secret"
    assert config.processing.mqtt_password == "backend-secret"
    for shown in (repr(config), repr(config.mqtt), repr(config.processing)):
        assert "secret" not in shown
    env_config = parse_config([], {"GATEWAY_PROCESSOR_MQTT_PASSWORD": "from-env"})
    assert env_config.processing.mqtt_password == "from-env" and "from-env" not in repr(env_config)


def test_every_option_belongs_to_exactly_one_sub_configuration() -> None:
    config = GatewayConfig()
    sections: list[Any] = [
        config.server,
        config.tls,
        config.limits,
        config.mqtt,
        config.registry,
        config.processing,
        config.metrics,
        config.devstack,
        config.runtime,
    ]
    counted = sum(len(fields(section)) for section in sections)
    found = options.specs(GatewayConfig, PREFIX)
    assert counted == len(found)
    assert {spec.option.group for spec in found} == set(GROUPS)


def test_help_shows_each_default_once() -> None:
    text = " ".join(build_parser().format_help().split())
    found = options.specs(GatewayConfig, PREFIX)
    assert text.count("(default:") == sum(1 for s in found if s.shown_default() is not None)
    assert "default: None" not in text
    assert (
        "run the message processor in this process (default: only with the development stack; "
        "env GATEWAY_PROCESSOR)" in text
    )
    for spec in found:
        assert spec.flag in text and spec.env in text


@pytest.mark.parametrize(
    ("argv", "environ", "names"),
    [
        ([], {"GATEWAY_REQUIRE_BROKER": "1"}, "--require-broker (GATEWAY_REQUIRE_BROKER)"),
        (["--require-broker"], {}, "--iot-endpoint (GATEWAY_IOT_ENDPOINT) or --mqtt-host"),
        (["--cert-file", __file__, "--key-file", __file__], {}, "--iot-endpoint (GATEWAY_IOT_"),
        ([], {"GATEWAY_CA_FILE": __file__}, "--ca-file (GATEWAY_CA_FILE) is set for AWS IoT"),
        (["--region", "eu-west-1"], {}, "--region (GATEWAY_REGION) is set for AWS"),
        (["--iot-api-url", "http://127.0.0.1:1"], {}, "drop --iot-api-url"),
    ],
)
def test_a_production_setting_without_a_broker_refuses_the_development_stack(
    argv: list[str], environ: dict[str, str], names: str
) -> None:
    refusal = dev_stack_refusal(parse_config(argv, environ))
    assert refusal is not None and names in refusal


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        ([], {}),
        ([], {"GATEWAY_REQUIRE_BROKER": "0"}),
        (
            ["--data-dir", "/tmp/x", "--port", "0", "--certfile", __file__, "--keyfile", __file__],
            {},
        ),
        (["--mqtt-host", "m", "--require-broker", "--region", "eu-west-1"], {}),
    ],
)
def test_no_refusal_for_development_or_a_configured_broker(
    argv: list[str], environ: dict[str, str]
) -> None:
    assert dev_stack_refusal(parse_config(argv, environ)) is None


def test_docs_configuration_md_is_up_to_date() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == configuration_markdown(), (
        "docs/configuration.md is stale: python -m gateway.config --markdown > docs/configuration.md"
    )


def test_the_docs_list_every_flag_and_variable_of_both_programs() -> None:
    text = configuration_markdown()
    for cls, prefix in ((GatewayConfig, PREFIX), (ProcessorConfig, PROCESSOR_PREFIX)):
        for spec in options.specs(cls, prefix):
            assert re.search(rf"`{re.escape(spec.flag)}`.*`{spec.env}`", text), spec.name


# The processor's own options.


def test_processor_defaults_flags_variables_and_precedence() -> None:
    assert processor([]) == ProcessorConfig()
    config = processor(
        ["--mqtt-port", "1884", "--client-id", "p2"],
        {
            "PROCESSOR_MQTT_PORT": "1999",
            "PROCESSOR_HEARTBEAT_INTERVAL": "7",
            "PROCESSOR_REGION": "",
        },
    )
    assert config.mqtt_port == 1884  # flag over variable
    assert config.heartbeat_interval == 7  # variable over default
    assert config.client_id == "p2"
    assert config.region == GatewayConfig.region  # empty variable: the default
    assert processor([], {"PROCESSOR_MQTT_PASSWORD": "pw"}).mqtt_password == "pw"


def test_shared_defaults_are_declared_once() -> None:
    """The processor and the MQTT link take the gateway's option defaults, not copies."""
    assert ProcessorSettings().heartbeat_interval == GatewayConfig.heartbeat_interval
    assert ProcessorSettings().client_id == ProcessorConfig.client_id
    assert ProcessorConfig.heartbeat_interval == GatewayConfig.heartbeat_interval
    settings = MqttSettings()
    assert (settings.port, settings.keepalive) == (
        GatewayConfig.mqtt_port,
        GatewayConfig.mqtt_keepalive,
    )
    assert (settings.connect_rate, settings.connect_burst, settings.connect_max_wait) == (
        GatewayConfig.mqtt_connect_rate,
        GatewayConfig.mqtt_connect_burst,
        GatewayConfig.mqtt_connect_max_wait,
    )
    assert settings.max_backlog_bytes == GatewayConfig.max_backlog_bytes


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--mqtt-port", "99999"], {}, "--mqtt-port must be between 0 and 65535"),
        ([], {"PROCESSOR_HEARTBEAT_INTERVAL": "0"}, "PROCESSOR_HEARTBEAT_INTERVAL must be >= 1"),
        ([], {"PROCESSOR_MQTT_PORT": "x"}, "PROCESSOR_MQTT_PORT: invalid int value: 'x'"),
        (["--log-level", "loud"], {}, "--log-level must be one of DEBUG, INFO, WARNING, ERROR"),
        (
            ["--ca-file", "/no/ca.pem", "--cert-file", __file__, "--key-file", __file__],
            {},
            "--ca-file names no such file: /no/ca.pem",
        ),
        (["--ca-file", __file__], {}, "MQTT over TLS needs --cert-file and --key-file"),
        (["--cert-file", __file__], {}, "MQTT over TLS needs --cert-file and --key-file"),
        (
            ["--mqtt-password-file", "/no/pw"],
            {},
            "cannot read --mqtt-password-file /no/pw: No such file or directory",
        ),
        (
            ["--mqtt-password-file", __file__],
            {"PROCESSOR_MQTT_PASSWORD": "pw"},
            "give --mqtt-password or --mqtt-password-file, not both",
        ),
    ],
)
def test_processor_bad_values_are_named(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        processor(argv, environ)
    assert message in str(caught.value)


def test_processor_load_config_exits_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_processor_config(["--heartbeat-interval", "0"], NO_ENV)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "python -m gateway.processor: error: --heartbeat-interval must be >= 1" in err
    assert len(err.splitlines()) == 2
