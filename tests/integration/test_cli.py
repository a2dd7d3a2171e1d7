"""`serverlessos-agent ctl` end to end against a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)


def ctl_at(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "serverlessos_agent.cli.main", "ctl", "--agent", endpoint, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ctl(agent: AgentProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return ctl_at(agent.endpoint, *args, check=check)


def test_run_ps_inspect_logs_update_stop(agent: AgentProcess) -> None:
    out = ctl(
        agent,
        "run",
        "web",
        "--cpu",
        "500m",
        "--memory",
        "64Mi",
        "--restart",
        "Never",
        "--env",
        "WHO=cli",
        "--",
        "sh",
        "-c",
        'echo "hello $WHO"; exec sleep 300',
    ).stdout
    assert out.splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "STATE",
        "PID",
        "RESTARTS",
        "CPU",
        "MEMORY",
        "AGE",
        "COMMAND",
    ]
    row = out.splitlines()[1].split()
    assert row[:3] == ["default", "web", "Running"] and row[5:7] == ["500m", "64Mi"]

    assert "web" in ctl(agent, "ps").stdout
    info = json.loads(ctl(agent, "-o", "json", "inspect", "web").stdout)
    assert info["state"] == "PROCESS_STATE_RUNNING"
    assert info["spec"]["resources"] == {"cpu_millis": "500", "memory_bytes": str(64 * 2**20)}
    assert "Memory limit:  64Mi" in ctl(agent, "inspect", "web").stdout

    time.sleep(0.2)
    assert ctl(agent, "logs", "web").stdout == "hello cli\n"

    ctl(agent, "update", "web", "--cpu", "1")
    info = json.loads(ctl(agent, "-o", "json", "inspect", "web").stdout)
    assert info["spec"]["resources"] == {"cpu_millis": "1000", "memory_bytes": str(64 * 2**20)}

    stats = ctl(agent, "stats").stdout
    assert "test-node" in stats and "web" in stats

    assert ctl(agent, "stop", "web", "--grace", "0").stdout.strip() == "stopped default/web"
    assert "web" not in ctl(agent, "ps").stdout


def test_namespaces_and_json_ps(agent: AgentProcess) -> None:
    ctl(agent, "-n", "team-x", "run", "job", "--", "sleep", "300")
    assert "processes" not in json.loads(ctl(agent, "-o", "json", "ps").stdout)  # none in default
    listed = json.loads(ctl(agent, "-o", "json", "ps", "-A").stdout)["processes"]
    assert [(p["spec"]["owner"]["namespace"], p["spec"]["name"]) for p in listed] == [
        ("team-x", "job")
    ]


def test_errors_are_one_line_and_nonzero(agent: AgentProcess) -> None:
    cases = [
        (["inspect", "missing"], 1, "no process 'missing'"),
        (["run", "x", "--cpu", "lots", "--", "true"], 2, "not a quantity"),
        (["run", "x"], 2, "give the command after --"),
        (["run", "x", "--cpu", "-1", "--", "true"], 1, "negative"),
        (["update", "missing", "--cpu", "1"], 1, "NOT_FOUND"),
    ]
    for args, code, words in cases:
        result = ctl(agent, *args, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ")


def test_unreachable_agent_is_a_clear_error() -> None:
    result = ctl_at("127.0.0.1:1", "--timeout", "3", "ps", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the agent at 127.0.0.1:1")


def test_events_and_follow_logs(agent: AgentProcess) -> None:
    ctl(agent, "run", "short", "--restart", "Never", "--", "sh", "-c", "echo a; sleep 0.3; echo b")
    follow = ctl(agent, "logs", "-f", "short").stdout
    assert follow == "a\nb\n"
    events = ctl(agent, "events", "--no-follow").stdout.splitlines()
    assert [line.split()[1:3] for line in events] == [
        ["STARTED", "default/short"],
        ["EXITED", "default/short"],
    ]


def test_flags_go_before_or_after_the_command(agent: AgentProcess) -> None:
    """--agent, -n, -o and --timeout are taken on either side of the command, as
    kubectl and crictl users type them; given on both, the later one wins."""
    ctl(agent, "run", "job", "-n", "team-y", "--restart", "Never", "--", "sleep", "300")
    assert "job" in ctl(agent, "-n", "team-y", "ps").stdout
    assert "job" in ctl(agent, "ps", "-n", "team-y").stdout
    assert "job" not in ctl(agent, "ps").stdout
    info = json.loads(ctl(agent, "inspect", "job", "-n", "team-y", "-o", "json").stdout)
    assert info["spec"]["owner"]["namespace"] == "team-y"
    assert json.loads(ctl(agent, "-o", "json", "-n", "team-y", "inspect", "job").stdout) == info
    assert "job" in ctl(agent, "-n", "default", "ps", "-n", "team-y").stdout
    assert "job" not in ctl(agent, "-n", "team-y", "ps", "-n", "default").stdout

    def ctl_no_agent(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "serverlessos_agent.cli.main", "ctl", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    later = ctl_no_agent(
        "--agent", "127.0.0.1:1", "ps", "-n", "team-y", "--agent", agent.endpoint, "--timeout", "10"
    )
    assert later.returncode == 0 and "job" in later.stdout, later.stderr
    unreachable = ctl_no_agent("--agent", agent.endpoint, "ps", "--agent", "127.0.0.1:1")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: cannot reach the agent at 127.0.0.1:1")

    # After "--" every flag is the command's, not ctl's.
    ctl(agent, "run", "printer", "--restart", "Never", "-n", "team-y", "--", "printf", "%s|", "-n")
    assert ctl(agent, "logs", "-f", "printer", "-n", "team-y").stdout == "-n|"
    printer = json.loads(ctl(agent, "-n", "team-y", "inspect", "printer", "-o", "json").stdout)
    assert printer["spec"]["argv"] == ["printf", "%s|", "-n"]


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serverlessos_agent.cli.main", "ctl", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("run", "ps", "inspect", "stop", "logs", "stats", "update", "events"):
        assert command in out
