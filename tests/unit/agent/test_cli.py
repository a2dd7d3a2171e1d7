"""The command line's parsing, called directly (tests/integration/test_cli.py runs it
against a real agent)."""

from __future__ import annotations

import pytest
from serverlessos_agent.cli.main import DEFAULT_AGENT, build_parser


@pytest.mark.parametrize(
    ("argv", "agent", "namespace", "output", "timeout"),
    [
        (["ctl", "ps"], DEFAULT_AGENT, "default", "table", 30.0),
        (["ctl", "-n", "x", "ps"], DEFAULT_AGENT, "x", "table", 30.0),
        (["ctl", "ps", "-n", "x"], DEFAULT_AGENT, "x", "table", 30.0),
        (["ctl", "inspect", "web", "-o", "json"], DEFAULT_AGENT, "default", "json", 30.0),
        (["ctl", "-o", "json", "inspect", "web"], DEFAULT_AGENT, "default", "json", 30.0),
        (["ctl", "-n", "a", "ps", "-n", "b"], DEFAULT_AGENT, "b", "table", 30.0),
        (["ctl", "--agent", "h:1", "stats", "--timeout", "3"], "h:1", "default", "table", 3.0),
        (["ctl", "--agent", "h:1", "logs", "w", "--agent", "h:2"], "h:2", "default", "table", 30.0),
        (["ctl", "run", "w", "--cpu", "1", "--namespace", "y"], DEFAULT_AGENT, "y", "table", 30.0),
        (
            ["ctl", "update", "w", "--cpu", "1", "-o", "json"],
            DEFAULT_AGENT,
            "default",
            "json",
            30.0,
        ),
    ],
)
def test_ctl_flags_go_before_or_after_the_command(
    argv: list[str], agent: str, namespace: str, output: str, timeout: float, monkeypatch
) -> None:
    monkeypatch.delenv("SERVERLESSOS_AGENT", raising=False)
    args = build_parser().parse_args(argv)
    assert (args.agent, args.namespace, args.output, args.timeout) == (
        agent,
        namespace,
        output,
        timeout,
    )
    commands = [a for a in argv if a in {"ps", "inspect", "stats", "logs", "run", "update"}]
    assert [args.ctl_command] == commands


def test_a_bad_flag_value_after_the_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["ctl", "ps", "-o", "yaml"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err
