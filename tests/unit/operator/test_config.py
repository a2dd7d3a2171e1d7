"""The operator's configuration (the chart's values as environment) and the agent DaemonSet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from serverlessos_operator.config import OperatorConfig
from serverlessos_operator.infra.daemonset import manifest


def test_daemonset_from_config() -> None:
    config = OperatorConfig.from_env(
        {
            "SERVERLESSOS_NAMESPACE": "sos",
            "SERVERLESSOS_AGENT_IMAGE": "reg/agent:1",
            "SERVERLESSOS_AGENT_ARGS": '["--stats-interval=5s"]',
            "SERVERLESSOS_AGENT_TOLERATIONS": '[{"operator": "Exists"}]',
            "SERVERLESSOS_AGENT_NODE_SELECTOR": '{"role": "worker"}',
        }
    )
    ds = manifest(config.daemonset)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert ds["metadata"]["namespace"] == "sos"
    assert container["image"] == "reg/agent:1"
    assert container["args"][-1] == "--stats-interval=5s"
    assert "--in-cluster" in container["args"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["nodeSelector"] == {"role": "worker"}
    assert pod["hostPID"] and container["securityContext"]["privileged"]


def test_bad_json_in_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SERVERLESSOS_AGENT_ARGS is not valid JSON"):
        OperatorConfig.from_env({"SERVERLESSOS_AGENT_ARGS": "[oops"})


def test_orchestration_settings_from_helm_values() -> None:
    """The chart's defaults are the code's defaults, passed the way the chart passes them."""
    values = yaml.safe_load(
        (Path(__file__).parents[3] / "charts/serverlessos/values.yaml").read_text()
    )
    env = {
        "SERVERLESSOS_PLACEMENT": json.dumps(values["placement"]),
        "SERVERLESSOS_REBALANCING": json.dumps(values["rebalancing"]),
        "SERVERLESSOS_CLUSTER_CGROUPS": json.dumps(values["clusterCgroups"]),
        "SERVERLESSOS_USAGE_INTERVAL": str(values["operator"]["usageIntervalSeconds"]),
    }
    assert OperatorConfig.from_env(env) == OperatorConfig.from_env({})
    custom = OperatorConfig.from_env(
        {"SERVERLESSOS_REBALANCING": '{"enabled": false, "highWatermark": 90, "hotIntervals": 5}'}
    )
    assert not custom.rebalancing_enabled
    assert (custom.rebalancing.high_watermark, custom.rebalancing.hot_intervals) == (90, 5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVERLESSOS_PLACEMENT": '{"choises": 3}'}, "unknown setting.s. choises"),
        ({"SERVERLESSOS_REBALANCING": '{"highWatermark": "80%"}'}, "highWatermark must be a"),
        ({"SERVERLESSOS_REBALANCING": '{"enabled": 1}'}, "enabled must be true or false"),
        ({"SERVERLESSOS_REBALANCING": '{"lowWatermark": 90}'}, "must be below highWatermark"),
        ({"SERVERLESSOS_CLUSTER_CGROUPS": "[]"}, "must be a JSON object"),
    ],
)
def test_bad_orchestration_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env(env)


def test_with_tls_the_agents_ask_for_their_certificates_and_probes_see_the_port() -> None:
    config = OperatorConfig.from_env({"SERVERLESSOS_NAMESPACE": "sos", "SERVERLESSOS_TLS": "true"})
    assert config.tls and config.agent_user == "system:serviceaccount:sos:serverlessos-agent"
    pod = manifest(config.daemonset)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--tls-bootstrap" in container["args"] and "--insecure" not in container["args"]
    assert "--operator-namespace=sos" in container["args"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": 7420}
    plain = manifest(OperatorConfig.from_env({}).daemonset)["spec"]["template"]["spec"]
    assert "--insecure" in plain["containers"][0]["args"]
