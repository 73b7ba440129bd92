"""The command-line programs as a user runs them: python -m fakeiot, python -m gateway, scripts/simulate.py."""

from __future__ import annotations

import configparser
import json
import re
import signal
from pathlib import Path

import pytest

from .processes import closed_port, embedded_fakeiot_api_url, fakeiot_urls, program, run


def test_standalone_fakeiot_gateway_and_simulator(tmp_path: Path) -> None:
    with program(
        "-m",
        "fakeiot",
        "--mqtt-port",
        "0",
        "--api-port",
        "0",
        "--data-dir",
        str(tmp_path),
    ) as iot:
        mqtt, api_url = fakeiot_urls(iot)
        created = run("-m", "fakeiot", "thing", "create", "CP1", "--api-url", api_url)
        assert created.returncode == 0, created.stderr
        assert "created Thing CP1" in created.stdout
        assert run("-m", "fakeiot", "thing", "list", "--api-url", api_url).stdout.split() == ["CP1"]
        missing = run("-m", "fakeiot", "shadow", "get", "CP1", "--api-url", api_url)
        assert missing.returncode == 1 and "No shadow exists with name: 'CP1'" in missing.stderr

        with program(
            "-m",
            "gateway",
            "--port",
            "0",
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(mqtt),
            "--iot-api-url",
            api_url,
            "--processor",
            "--heartbeat-interval",
            "1",
            "--processor-mqtt-username",
            "fakeiot-backend",
            "--processor-mqtt-password-file",
            str(tmp_path / "backend-password"),
            "--mqtt-username",
            "fakeiot-gateway",
            "--mqtt-password-file",
            str(tmp_path / "gateway-password"),
        ) as gw:
            url = re.search(
                r"listening on (ws://\S+)/<charge-point-id>", gw.wait_for_line("listening on")
            ).group(1)  # type: ignore[union-attr]
            ok = run(
                "scripts/simulate.py",
                "--url",
                url,
                "--cp-id",
                "CP1",
                "--heartbeats",
                "2",
                "--ocpp",
                "1.6",
            )
            assert ok.returncode == 0, ok.stderr
            assert "CP1: connected to central system" in ok.stderr
            assert "CP1: heartbeat interval set to 1" in ok.stderr
            assert (
                len(re.findall(r"CP1: received \[3,", ok.stderr)) == 3
            )  # boot + 2 heartbeats, every frame logged
            refused = run(
                "scripts/simulate.py", "--url", url, "--cp-id", "CP2", "--heartbeats", "1"
            )
            assert refused.returncode == 1
            assert (
                "code 1008, reason 'Charge Point CP2 not registered as an IoT Thing'"
                in refused.stderr
            )
        assert gw.proc.returncode == 0

        shadow = run("-m", "fakeiot", "shadow", "get", "CP1", "--api-url", api_url)
        assert (
            json.loads(shadow.stdout)["state"]["reported"]["chargingStation"]["vendorName"]
            == "ACME"
        )
        assert run("-m", "fakeiot", "thing", "delete", "CP1", "--api-url", api_url).returncode == 0
        assert run("-m", "fakeiot", "thing", "list", "--api-url", api_url).stdout.split() == []
        again = run("-m", "fakeiot", "thing", "delete", "CP1", "--api-url", api_url)
        assert (
            again.returncode == 1
            and "Thing CP1 cannot be found" in again.stderr
            and "deleted" not in again.stdout
        )


def test_gateway_with_embedded_fakeiot_starts_and_stops_cleanly(tmp_path: Path) -> None:
    with program(
        "-m",
        "gateway",
        "--port",
        "0",
        "--mqtt-port",
        "0",
        "--fakeiot-api-port",
        "0",
        "--data-dir",
        str(tmp_path),
        "--log-level",
        "DEBUG",
    ) as gw:
        gw.wait_for_line("OCPP gateway listening on ws://127.0.0.1:")
        api_url = embedded_fakeiot_api_url(gw)
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", api_url), api_url
        created = run("-m", "fakeiot", "thing", "create", "CP.7", "--api-url", api_url)
        assert "created Thing CP:2E7" in created.stdout
        assert gw.stop() == 0
    assert (tmp_path / "fakeiot.sqlite3").exists()


def test_cli_errors_are_clear() -> None:
    bad_port = run("-m", "gateway", "--port", "eighty")
    assert (
        bad_port.returncode == 2
        and "argument --port: invalid int value: 'eighty'" in bad_port.stderr
    )
    assert (
        len(bad_port.stderr.splitlines()) == 2
    )  # one usage line and the error, not the whole option list
    bad_sub = run("-m", "gateway", "--subprotocols", "ocpp1.5")
    assert bad_sub.returncode == 2 and "unknown ['ocpp1.5']" in bad_sub.stderr
    with closed_port() as dead:
        unreachable = run("-m", "fakeiot", "thing", "list", "--api-url", f"http://127.0.0.1:{dead}")
    assert unreachable.returncode == 1 and "cannot reach fakeiot" in unreachable.stderr
    no_scheme = run("-m", "fakeiot", "thing", "list", "--api-url", "127.0.0.1:8090")
    assert (
        no_scheme.returncode == 2 and "--api-url must be a URL such as http://" in no_scheme.stderr
    )
    assert "Traceback" not in no_scheme.stderr
    for flag, value, message in (
        ("--close-timeout", "0", "--close-timeout must be > 0"),
        ("--call-timeout", "-1", "--call-timeout must be >= 0"),
        ("--base-path", "ocpp", "--base-path must look like /ocpp"),
        ("--cp-reconnect-burst", "0", "--cp-reconnect-burst must be >= 1"),
        ("--max-backlog-bytes", "10", "--max-backlog-bytes must be at least --max-frame-size"),
        ("--registry-rate", "0", "--registry-rate must be > 0"),
    ):
        bad = run("-m", "gateway", flag, value)
        assert bad.returncode == 2 and message in bad.stderr, (flag, bad.stderr[-300:])
    bad_id = run("-m", "fakeiot", "thing", "create", "CP:1")
    assert bad_id.returncode == 2 and "':' is not allowed" in bad_id.stderr
    bad_gc = run("-m", "gateway", "--gc-full-interval", "-1")
    assert bad_gc.returncode == 2 and "--gc-full-interval must be >= 0" in bad_gc.stderr
    bad_young = run("-m", "gateway", "--gc-young-interval", "-0.1")
    assert bad_young.returncode == 2 and "--gc-young-interval must be >= 0" in bad_young.stderr
    help_text = run("-m", "gateway", "--help").stdout
    for option in (
        "--host",
        "--port",
        "--mqtt-host",
        "--iot-api-url",
        "--subprotocols",
        "--gc-full-interval",
        "--gc-young-interval",
        "GATEWAY_",
    ):
        assert option in help_text


def test_gateway_reports_a_busy_port(tmp_path: Path) -> None:
    with program(
        "-m", "fakeiot", "--mqtt-port", "0", "--api-port", "0", "--data-dir", str(tmp_path)
    ) as iot:
        # The port is taken by the running fakeiot (bound on port 0, then reported): no race.
        _, taken_url = fakeiot_urls(iot)
        api = int(taken_url.rsplit(":", 1)[1])
        clash = run(
            "-m",
            "gateway",
            "--port",
            "0",
            "--mqtt-port",
            "0",
            "--fakeiot-api-port",
            str(api),
            "--data-dir",
            str(tmp_path / "x"),
        )
        assert clash.returncode == 2
        assert f"fakeiot HTTP API cannot listen on 127.0.0.1:{api}" in clash.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_requires_a_broker() -> None:
    """No Docker daemon in CI: check the Dockerfile's promises statically (see docs/deploying.md: what was not tested)."""
    dockerfile = (Path(__file__).parent.parent / "Dockerfile").read_text()
    logical = dockerfile.replace("\\\n", " ")
    instructions = [
        line.split(None, 1) for line in logical.splitlines() if line and not line.startswith("#")
    ]
    users = [rest for (op, *rest) in instructions if op == "USER"]
    assert users and users[-1] != ["root"]
    assert any(
        op == "HEALTHCHECK" and "gateway.healthcheck" in rest[0] for op, *rest in instructions
    )
    copied = {rest[0].split()[0] for op, *rest in instructions if op == "COPY"}
    assert "gateway" in copied
    # The product only: no stand-in, no amqtt, and no silent fall-back to the development stack.
    assert "fakeiot" not in copied
    installs = [rest[0] for op, *rest in instructions if op == "RUN" and "pip install" in rest[0]]
    assert installs and not any("[dev]" in i or "[test]" in i or "amqtt" in i for i in installs)
    env = " ".join(rest[0] for op, *rest in instructions if op == "ENV")
    assert "GATEWAY_REQUIRE_BROKER=1" in env


def test_amqtt_is_a_development_extra_not_a_requirement() -> None:
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parent.parent / "setup.cfg")
    required = setup["options"]["install_requires"]
    extras = setup["options.extras_require"]
    assert "amqtt" not in required
    assert "amqtt" in extras["dev"] and "amqtt" in extras["test"]


def test_the_development_stack_says_loudly_what_it_is(tmp_path: Path) -> None:
    with program(
        "-m",
        "gateway",
        "--port",
        "0",
        "--mqtt-port",
        "0",
        "--fakeiot-api-port",
        "0",
        "--data-dir",
        str(tmp_path),
    ) as gw:
        gw.wait_for_line("OCPP gateway listening on")
        warnings = [line for line in gw.lines if " WARNING gateway.devstack: " in line]
        assert len(warnings) >= 3
        text = " ".join(warnings)
        assert "DEVELOPMENT STACK" in text and "NOT for production" in text
        assert "--iot-endpoint" in text and "GATEWAY_REQUIRE_BROKER" in text
        assert "(not for production)" in gw.wait_for_line("development stack: embedded fakeiot")


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        ((), {"GATEWAY_REQUIRE_BROKER": "1"}, "--iot-endpoint (GATEWAY_IOT_ENDPOINT)"),
        (("--cert-file", __file__, "--key-file", __file__), {}, "--iot-endpoint (GATEWAY_IOT_"),
        (("--region", "eu-west-1"), {}, "--region (GATEWAY_REGION)"),
        (("--iot-api-url", "http://127.0.0.1:9"), {}, "drop --iot-api-url"),
    ],
)
def test_a_production_setting_without_a_broker_refuses_to_start(
    args: tuple[str, ...], env: dict[str, str], names: str
) -> None:
    refused = run("-m", "gateway", "--port", "0", *args, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
    assert names in refused.stderr, refused.stderr
    assert refused.stdout == ""  # nothing started, not even the development stack's banner


def test_without_amqtt_the_development_stack_asks_for_the_dev_extra() -> None:
    code = (
        "import sys; sys.modules['amqtt'] = None\n"
        "from gateway.__main__ import main\n"
        "sys.exit(main(['--port', '0', '--mqtt-port', '0', '--fakeiot-api-port', '0']))"
    )
    missing = run("-c", code)
    assert missing.returncode == 2
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    assert "no module named 'amqtt'" in missing.stderr
    assert "pip install -e '.[dev]'" in missing.stderr and "--iot-endpoint" in missing.stderr


def test_ctrl_c_stops_the_development_stack_with_one_line_per_stage(tmp_path: Path) -> None:
    with program(
        "-m",
        "gateway",
        "--port",
        "0",
        "--mqtt-port",
        "0",
        "--fakeiot-api-port",
        "0",
        "--data-dir",
        str(tmp_path),
    ) as gw:
        url = re.search(
            r"listening on (ws://\S+)/<charge-point-id>", gw.wait_for_line("listening on")
        ).group(1)  # type: ignore[union-attr]
        run("-m", "fakeiot", "thing", "create", "CP1", "--api-url", embedded_fakeiot_api_url(gw))
        with program(
            "scripts/simulate.py", "--url", url, "--cp-id", "CP1", "--heartbeats", "100"
        ) as cp:
            cp.wait_for_line("heartbeat interval set to")
            gw.wait_for_line("CP1: connected from")
            gw.proc.send_signal(signal.SIGINT)
            gw.wait_for_line("gateway stopped: event loop lag")
            cp.wait_for_line("code 1001, reason 'Gateway shutting down'")
        assert gw.proc.wait(timeout=15) == 0
    after = gw.lines[gw.lines.index(next(line for line in gw.lines if "received SIGINT" in line)) :]
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in gw.lines)
    stages = [line.split(" ", 3)[-1] for line in after if " INFO " in line or " WARNING " in line]
    assert len(stages) == len(set(stages)), after  # no line said twice
    assert any("draining: closing 1 charge point connection(s) with 1001" in s for s in stages)
    assert any("CP1: disconnected (1001 Gateway shutting down)" in s for s in stages)


def test_a_second_development_stack_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    with program(
        "-m",
        "gateway",
        "--port",
        "0",
        "--mqtt-port",
        "0",
        "--fakeiot-api-port",
        "0",
        "--data-dir",
        str(tmp_path),
    ) as first:
        first.wait_for_line("OCPP gateway listening on")
        second = run(
            "-m",
            "gateway",
            "--port",
            "0",
            "--mqtt-port",
            "0",
            "--fakeiot-api-port",
            "0",
            "--data-dir",
            str(tmp_path),
            timeout=10,
        )
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(first.proc.pid) in errors[0], second.stderr
        assert "Traceback" not in second.stderr
