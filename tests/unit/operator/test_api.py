"""The API models as the operator uses them at runtime: parsing, defaults, conditions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from serverlessos_operator.api.conditions import set_condition, wire
from serverlessos_operator.api.meta import describe
from serverlessos_operator.api.v1alpha1 import (
    ClusterCgroup,
    LabelSelector,
    MigrationMode,
    MigrationPhase,
    MigrationPolicy,
    ProcessMigration,
    ProcessPhase,
    RestartPolicy,
    ServerlessNode,
    ServerlessProcess,
)

ROOT = Path(__file__).resolve().parents[3]
KINDS = {
    m.__name__: m for m in (ServerlessProcess, ServerlessNode, ProcessMigration, ClusterCgroup)
}


def test_conditions_keep_transition_time_when_unchanged() -> None:
    first = set_condition([], "Ready", True, "Running")
    first[0] = first[0].model_copy(update={"last_transition_time": "2020-01-01T00:00:00Z"})
    same = set_condition(first, "Ready", True, "Running")
    assert same[0].last_transition_time == "2020-01-01T00:00:00Z"
    flipped = set_condition(first, "Ready", False, "Error", "exited 1")
    assert flipped[0].last_transition_time != "2020-01-01T00:00:00Z"
    assert flipped[0].message == "exited 1" and not flipped[0].true
    assert wire(flipped) == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Error",
            "message": "exited 1",
            "lastTransitionTime": flipped[0].last_transition_time,
        }
    ]


def test_pydantic_model_reads_a_manifest() -> None:
    """Defaults live in the models, once: what the API server would fill in."""
    sp = ServerlessProcess.model_validate({"spec": {"command": ["sleep", "1"]}})
    assert sp.spec.resources.cpu.milli_value() == 100
    assert sp.spec.resources.memory.value() == 128 * 2**20
    assert sp.spec.restart_policy is RestartPolicy.ALWAYS
    assert sp.spec.migration.policy is MigrationPolicy.MANUAL
    assert sp.spec.migration.mode is MigrationMode.AUTO
    with pytest.raises(ValueError):
        ServerlessProcess.model_validate({"spec": {"command": []}})


def test_the_example_manifests_parse() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            model = KINDS[doc["kind"]]
            model.model_validate(doc)


def test_quantities_are_parsed_as_the_api_server_does() -> None:
    sp = ServerlessProcess.model_validate(
        {"spec": {"command": ["x"], "resources": {"cpu": "10.5m", "memory": 1073741824}}}
    )
    # Sub-millicore precision rounds up to the next whole millicore, as for Pods.
    assert sp.spec.resources.cpu.milli_value() == 11
    assert sp.spec.resources.memory.value() == 2**30
    assert sp.to_wire()["spec"]["resources"] == {"cpu": "10500u", "memory": "1073741824"}


def test_refused_values_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        ServerlessProcess.model_validate(
            {
                "spec": {
                    "command": ["x"],
                    "resources": {"cpu": "lots"},
                    "restartPolicy": "Sometimes",
                }
            }
        )
    message = describe(err.value)
    assert "spec.resources.cpu: 'lots' is not a quantity" in message
    assert "spec.restartPolicy" in message


def test_label_selectors_match_as_the_api_server_does() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"team": "a", "tier": "web"})
    assert not selector.matches({"team": "a", "tier": "db"})
    assert not selector.matches({"team": "a", "tier": "web", "canary": "1"})
    assert not selector.matches({"tier": "web"})
    assert not LabelSelector().matches({"team": "a"})  # empty selects nothing
    not_in = LabelSelector.model_validate(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}
    )
    assert not_in.matches({}) and not_in.matches({"tier": "web"})
    assert not not_in.matches({"tier": "db"})


def test_phases_know_what_is_over_and_what_waits() -> None:
    assert ProcessPhase.SUCCEEDED.terminal and ProcessPhase.FAILED.terminal
    assert not ProcessPhase.RUNNING.terminal
    assert {p for p in ProcessPhase if p.waiting} == {
        ProcessPhase.PENDING,
        ProcessPhase.UNSCHEDULABLE,
        ProcessPhase.SCHEDULED,
    }
    assert {p for p in MigrationPhase if p.terminal} == {
        MigrationPhase.SUCCEEDED,
        MigrationPhase.FAILED,
        MigrationPhase.ROLLED_BACK,
    }


def test_the_readme_sample_is_the_example_make_up_applies() -> None:
    """What the README shows is what runs on the local cluster (e2e runs the example)."""
    readme = (ROOT / "README.md").read_text()
    sample = yaml.safe_load(readme.split("```yaml\n", 1)[1].split("```", 1)[0])
    example = yaml.safe_load((ROOT / "examples" / "process.yaml").read_text())
    shown, applied = (
        ServerlessProcess.model_validate(sample),
        ServerlessProcess.model_validate(example),
    )
    assert shown.spec == applied.spec and shown.metadata.name == applied.metadata.name


def test_the_models_hold_the_crds_exec_size_rule_too() -> None:
    """An object stored before the CRD had the rule is refused at the operator's door."""
    fits = {"command": ["x"], "args": ["a" * 32000, "b" * 31000], "env": [{"name": "E"}]}
    assert ServerlessProcess.model_validate({"spec": fits})
    too_big = {**fits, "env": [{"name": "E", "value": "c" * 1000}]}
    with pytest.raises(ValidationError, match="within 64000 characters"):
        ServerlessProcess.model_validate({"spec": too_big})
