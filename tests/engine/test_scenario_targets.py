"""Target fields for remote adapters (SPEC §6): host, user, port, identity_file, workdir,
ssh_options; any adapter name is read (plug-ins), `abreast run` checks it's installed."""

from __future__ import annotations

import pytest

from engine.plan import Target
from engine.scenario import ScenarioError
from tests.helpers import plan_of


def test_ssh_fields_reach_the_plan_and_options_read_as_ssh_writes_them():
    plan = plan_of("""
        targets:
          - name: web-01
            adapter: ssh
            host: 10.0.0.5
            user: deploy
            port: 2222
            identity_file: keys/deploy
            workdir: /srv/app
            ssh_options: {StrictHostKeyChecking: yes, ServerAliveInterval: 15, ProxyJump: bastion}
          - name: web-02
            adapter: ssh
            ssh_options: ["ConnectTimeout=3", "ProxyJump bastion"]
          - name: web-03
            adapter: ssh
            ssh_options: "-o StrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null -o 'ProxyCommand ssh -W %h:%p jump'"
          - name: lab
            adapter: tentacle
        steps: [{name: s, roles: []}]
    """)
    assert plan.targets == (
        Target(name="web-01", adapter="ssh", host="10.0.0.5", user="deploy", port=2222, identity_file="keys/deploy",
               workdir="/srv/app", ssh_options={"StrictHostKeyChecking": "yes", "ServerAliveInterval": "15", "ProxyJump": "bastion"}),
        Target(name="web-02", adapter="ssh", ssh_options={"ConnectTimeout": "3", "ProxyJump": "bastion"}),
        Target(name="web-03", adapter="ssh", ssh_options={
            "StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null", "ProxyCommand": "ssh -W %h:%p jump"}),
        Target(name="lab", adapter="tentacle"),
    )


@pytest.mark.parametrize(("fields", "where", "message"), [
    ("port: 0", "$.targets[0].port", "expected `int` >= 1"),
    ("port: 70000", "$.targets[0].port", "expected `int` <= 65535"),
    ("host: ''", "$.targets[0].host", "expected `str` of length >= 1"),
    ("ssh_options: {'-oProxyCommand': x}", '$.targets[0].ssh_options["-oProxyCommand"]', "expected an ssh option name such as ServerAliveInterval, got '-oProxyCommand'"),
    ("ssh_options: ['ProxyCommand']", "$.targets[0].ssh_options[0]", "expected a one-line value for ProxyCommand, got ''"),
    ('ssh_options: {LocalCommand: "a\\nb"}', "$.targets[0].ssh_options.LocalCommand", "expected a one-line value for LocalCommand, got 'a\\nb'"),
    ("adapter: ''", "$.targets[0].adapter", "expected `str` of length >= 1"),
    ("ssh_options: \"-o 'unclosed\"", "$.targets[0].ssh_options", "cannot read the options: No closing quotation"),
    ("ssh_options: 7", "$.targets[0].ssh_options", "expected `str | object | array`, got `int`"),
])
def test_bad_remote_fields_name_their_place(fields, where, message):
    with pytest.raises(ScenarioError) as e:
        plan_of(f"""
            targets:
              - {{name: web-01, adapter: ssh, {fields}}}
            steps: [{{name: s}}]
        """)
    assert str(e.value) == f"test.yaml: {where}: {message}"


def test_a_local_target_with_remote_fields_is_refused_it_would_run_here():
    with pytest.raises(ScenarioError) as e:
        plan_of("""
            targets:
              - {name: web-01, host: 10.0.0.5, workdir: /srv}
            steps: [{name: s}]
        """)
    assert str(e.value).split("\n") == [
        "test.yaml: $.targets[0].host: the local adapter runs commands on this machine: set `adapter: ssh` to reach 'web-01' there",
        "test.yaml: $.targets[0].workdir: the local adapter runs commands on this machine: set `adapter: ssh` to reach 'web-01' there",
    ]


def test_a_rehearsal_target_may_keep_its_remote_fields():
    plan = plan_of("""
        targets:
          - {name: web-01, adapter: dry-run, host: 10.0.0.5}
        steps: [{name: s}]
    """)
    assert plan.targets[0].host == "10.0.0.5"
