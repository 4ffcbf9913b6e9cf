"""Brokered secrets at admission and at start: the node gets a placeholder and its
broker's URL, never the value nor its API host; the value goes to the proxy only."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.backend.memory import MemoryBackend
from sandbox_orch.brokerpolicy import BrokerGrant
from sandbox_orch.egress.broker import Brokered, base_url
from sandbox_orch.errors import InputRefused
from sandbox_orch.execution import NodeRunner
from sandbox_orch.plan_render import render_text
from sandbox_orch.policy import POLICIES_DIR, SecretGrant, load_policy
from sandbox_orch.redaction import Redactor
from sandbox_orch.secrets import PLACEHOLDER_PREFIX, SecretStore

from .helpers import default_policy, plan_of

AGENTS = load_policy(POLICIES_DIR / "agents.yaml")
SESSIONS = load_policy(POLICIES_DIR / "sessions.yaml")
ANTHROPIC = base_url("https://api.anthropic.com")
OPENAI = base_url("https://api.openai.com")
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-real-0123456789", "OPENAI_API_KEY": "sk-oa-real-0123456789"}


def node(body: str, name: str = "a") -> str:
    return f"version: 1\nname: x\nnodes:\n  {name}:\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()
    )


def refusals(text: str, policy=AGENTS, environ=KEYS) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(text), policy, environ)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("policy", [AGENTS, SESSIONS], ids=["agents", "sessions"])
def test_claude_gets_a_placeholder_slot_and_its_broker_not_its_api_host(policy):
    box = admit(plan_of(node("runtime: claude\nprompt: hi")), policy, KEYS)["a"]
    assert box.egress == () and box.secrets == ("ANTHROPIC_API_KEY",)
    assert box.brokered == {"ANTHROPIC_API_KEY": "https://api.anthropic.com"}
    assert box.env == {"ANTHROPIC_BASE_URL": ANTHROPIC}
    assert ANTHROPIC == "http://127.0.0.1:3128/_broker/api.anthropic.com"
    described = box.describe()
    assert described["secret_delivery"] == {
        "ANTHROPIC_API_KEY": "brokered to https://api.anthropic.com"
    }
    assert described["network"] == "none+egress-proxy" and described["egress"] == []
    assert KEYS["ANTHROPIC_API_KEY"] not in repr(box)


def test_the_plan_says_how_each_secret_is_delivered():
    plan = plan_of(node("runtime: claude\nprompt: hi"))
    text = render_text(plan, admit(plan, AGENTS, KEYS))
    assert "\n    secrets: ANTHROPIC_API_KEY (brokered to https://api.anthropic.com)" in text
    assert KEYS["ANTHROPIC_API_KEY"] not in text
    shell = plan_of(node("command: [x]"))
    assert "secrets:" not in render_text(shell, admit(shell, default_policy(), KEYS))


def test_codex_is_told_its_provider_url_with_v1():
    box = admit(plan_of(node("runtime: codex\nprompt: hi")), AGENTS, KEYS)["a"]
    assert box.egress == () and box.secrets == ("OPENAI_API_KEY",)
    assert box.env == {"OPENAI_BASE_URL": OPENAI + "/v1"}
    assert box.brokered == {"OPENAI_API_KEY": "https://api.openai.com"}


def test_a_subscription_token_is_brokered_when_it_is_the_login_set():
    environ = {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-real-0123456789"}
    box = admit(plan_of(node("runtime: claude\nprompt: hi")), AGENTS, environ)["a"]
    assert box.secrets == ("CLAUDE_CODE_OAUTH_TOKEN",) and box.egress == ()
    assert box.brokered == {"CLAUDE_CODE_OAUTH_TOKEN": "https://api.anthropic.com"}
    assert box.env == {"ANTHROPIC_BASE_URL": ANTHROPIC}


def test_a_node_asking_the_key_by_name_is_brokered_too():
    text = node("runtime: claude\nprompt: hi\nsecrets: [ANTHROPIC_API_KEY]")
    box = admit(plan_of(text), AGENTS, KEYS)["a"]
    assert box.egress == () and box.env == {"ANTHROPIC_BASE_URL": ANTHROPIC}


BASE_URL_REFUSED = (
    "wf.yaml:{line}: nodes.a.env.ANTHROPIC_BASE_URL: node 'a': secret ANTHROPIC_API_KEY is "
    "brokered to https://api.anthropic.com: sandbox-orch sets ANTHROPIC_BASE_URL to the "
    "node's broker, the node cannot set it"
)


@pytest.mark.parametrize("value", ["https://gw.example", ""])
def test_a_node_that_sets_its_base_url_while_its_key_is_brokered_is_refused(value):
    """Only that is said: the gateway's host is not asked (the key would not go there)."""
    text = node("runtime: claude\nprompt: hi\nsecrets: [ANTHROPIC_API_KEY]\n"
                f"env: {{ANTHROPIC_BASE_URL: '{value}'}}")  # fmt: skip
    assert refusals(text) == [BASE_URL_REFUSED.format(line=8)]


def test_a_default_login_with_a_base_url_of_its_own_is_refused_saying_why():
    text = node("runtime: claude\nprompt: hi\nenv: {ANTHROPIC_BASE_URL: 'https://gw.example'}")
    assert refusals(text) == [BASE_URL_REFUSED.format(line=7)]


def test_a_base_url_with_network_of_its_own_is_refused_with_the_rest():
    text = node("runtime: claude\nprompt: hi\nnetwork: {egress: ['gw.example:443']}\n"
                "env: {ANTHROPIC_BASE_URL: 'https://gw.example'}")  # fmt: skip
    assert refusals(text) == [
        "wf.yaml:7: nodes.a.network.egress[0]: node 'a': egress to 'gw.example:443' is not "
        "granted by the policy",
        "wf.yaml:5: nodes.a.runtime: node 'a': secret ANTHROPIC_API_KEY cannot go to a "
        "node with egress to gw.example:443",
        BASE_URL_REFUSED.format(line=8),
    ]


def test_a_node_with_network_of_its_own_keeps_it():
    policy = dataclasses.replace(AGENTS, egress=("pypi.org:443",))
    grant = dataclasses.replace(AGENTS.secrets["ANTHROPIC_API_KEY"], egress=("pypi.org:443",))
    policy = dataclasses.replace(policy, secrets={**policy.secrets, "ANTHROPIC_API_KEY": grant})
    text = node("runtime: claude\nprompt: hi\nnetwork: {egress: ['pypi.org:443']}")
    box = admit(plan_of(text), policy, KEYS)["a"]
    assert box.egress == ("pypi.org:443",) and box.env == {"ANTHROPIC_BASE_URL": ANTHROPIC}


def test_a_login_granted_to_another_runtime_keeps_the_api_host_asked():
    """Not brokered to this node (granted to codex only): its API host is still asked,
    and refused with the secret."""
    grant = dataclasses.replace(AGENTS.secrets["ANTHROPIC_API_KEY"], runtimes=("codex",))
    policy = dataclasses.replace(
        AGENTS,
        secrets={**AGENTS.secrets, "ANTHROPIC_API_KEY": grant, "CLAUDE_CODE_OAUTH_TOKEN": grant},
    )
    assert refusals(node("runtime: claude\nprompt: hi"), policy) == [
        "wf.yaml:5: nodes.a.runtime: node 'a': egress to 'api.anthropic.com:443' is not "
        "granted by the policy",
        "wf.yaml:5: nodes.a.runtime: node 'a': secret ANTHROPIC_API_KEY is not granted to "
        "runtime 'claude' (claude logs in with any one of ANTHROPIC_API_KEY, "
        "CLAUDE_CODE_OAUTH_TOKEN)",
    ]


def test_a_brokered_secret_that_is_not_the_login_keeps_the_api_host():
    """Claude with its key in the environment and another secret brokered: it still
    needs its API host; the other secret is brokered all the same."""
    key = env_grant("ANTHROPIC_API_KEY", ("claude",), ("api.anthropic.com:443",))
    token = broker_grant(base_url_env="API_URL")
    token = dataclasses.replace(token, runtimes=("claude",), egress=("api.anthropic.com:443",))
    policy = dataclasses.replace(
        AGENTS,
        egress=("api.anthropic.com:443",),
        secrets={"ANTHROPIC_API_KEY": key, "TOKEN": token},
    )
    text = node("runtime: claude\nprompt: hi\nsecrets: [ANTHROPIC_API_KEY, TOKEN]")
    box = admit(plan_of(text), policy, {**KEYS, "TOKEN": "t-0123456789"})["a"]
    assert box.egress == ("api.anthropic.com:443",)
    assert box.brokered == {"TOKEN": "https://api.example"}
    assert box.env == {"API_URL": base_url("https://api.example")}
    assert box.describe()["secret_delivery"] == {
        "ANTHROPIC_API_KEY": "env",
        "TOKEN": "brokered to https://api.example",
    }


def env_grant(name: str, runtimes: tuple[str, ...], egress: tuple[str, ...]) -> SecretGrant:
    return SecretGrant(name, name, None, runtimes, egress)


def test_environment_mode_is_unchanged():
    grant = env_grant("ANTHROPIC_API_KEY", ("claude",), ("api.anthropic.com:443",))
    policy = dataclasses.replace(
        AGENTS, egress=("api.anthropic.com:443",), secrets={"ANTHROPIC_API_KEY": grant}
    )
    box = admit(plan_of(node("runtime: claude\nprompt: hi")), policy, KEYS)["a"]
    assert box.egress == ("api.anthropic.com:443",) and box.brokered == {} and box.env == {}
    assert box.describe()["secret_delivery"] == {"ANTHROPIC_API_KEY": "env"}


def test_a_brokered_secret_of_another_runtime_is_not_brokered_here():
    """Granted to claude only: a shell node asking it is refused, never given a broker."""
    policy = dataclasses.replace(AGENTS, runtimes=(*AGENTS.runtimes, "shell"))
    lines = refusals(node("command: [x]\nsecrets: [ANTHROPIC_API_KEY]"), policy)
    assert lines == [
        "wf.yaml:6: nodes.a.secrets[0]: node 'a': secret ANTHROPIC_API_KEY is not granted "
        "to runtime 'shell'"
    ]


def broker_grant(**changes) -> SecretGrant:
    broker = BrokerGrant("https://api.example", "authorization", "Bearer ", **changes)
    return SecretGrant("TOKEN", "TOKEN", None, ("shell",), (), broker)


def test_a_custom_variable_names_the_broker_for_any_runtime():
    policy = dataclasses.replace(
        default_policy(), secrets={"TOKEN": broker_grant(base_url_env="API_URL")}
    )
    box = admit(plan_of(node("command: [x]\nsecrets: [TOKEN]")), policy, {"TOKEN": "t-1234"})
    assert box["a"].env == {"API_URL": base_url("https://api.example")}
    assert box["a"].egress == () and box["a"].brokered == {"TOKEN": "https://api.example"}


def test_a_runtime_without_a_base_url_variable_is_refused():
    policy = dataclasses.replace(default_policy(), secrets={"TOKEN": broker_grant()})
    lines = refusals(node("command: [x]\nsecrets: [TOKEN]"), policy, {"TOKEN": "t-1234"})
    assert lines == [
        "wf.yaml:6: nodes.a.secrets[0]: node 'a': secret TOKEN is brokered, but runtime "
        "'shell' has no base-URL variable: the policy's broker.base_url_env must name one"
    ]


def test_a_node_setting_the_custom_variable_is_refused():
    policy = dataclasses.replace(
        default_policy(), secrets={"TOKEN": broker_grant(base_url_env="API_URL")}
    )
    text = node("command: [x]\nsecrets: [TOKEN]\nenv: {API_URL: 'http://x'}")
    assert refusals(text, policy, {"TOKEN": "t-1234"}) == [
        "wf.yaml:7: nodes.a.env.API_URL: node 'a': secret TOKEN is brokered to "
        "https://api.example: sandbox-orch sets API_URL to the node's broker, the node "
        "cannot set it"
    ]


# --- at start: the placeholder in the node, the value to the proxy ------------------------


class FakeProxy:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[tuple[str, list[str], list[Brokered]]] = []

    async def open(self, node, grants, brokered=(), setup=None):
        self.opened.append((node, grants, list(brokered)))
        return self.root


def test_the_value_goes_to_the_proxy_and_the_node_holds_a_placeholder(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEYS["ANTHROPIC_API_KEY"])
    plan = plan_of(node("runtime: claude\nprompt: hi"))
    box = admit(plan, AGENTS, KEYS)["a"]
    store = SecretStore(AGENTS.secrets, Redactor())
    proxy = FakeProxy(tmp_path)
    runner = NodeRunner(MemoryBackend(), "run", "owner", egress=proxy, secrets=store)  # type: ignore[arg-type]
    spec = runner.spec(plan.nodes["a"], box, 1)
    spec = asyncio.run(runner._with_egress_and_secrets(spec, plan.nodes["a"], box))
    placeholder = spec.env["ANTHROPIC_API_KEY"]
    assert PLACEHOLDER_PREFIX == "sandbox-orch-brokered-"  # plainly not a key
    assert placeholder.startswith(PLACEHOLDER_PREFIX) and len(placeholder) == 22 + 32
    assert spec.env["ANTHROPIC_BASE_URL"] == ANTHROPIC
    assert KEYS["ANTHROPIC_API_KEY"] not in repr(spec)
    assert spec.argv[0] == "sandbox-orch-egress" and spec.engine_log is False
    ((name, grants, (brokered,)),) = proxy.opened
    assert (name, grants) == ("a", [])
    assert brokered == Brokered(
        name="ANTHROPIC_API_KEY",
        upstream="https://api.anthropic.com",
        header="x-api-key",
        scheme="",
        placeholder=placeholder,
        value=KEYS["ANTHROPIC_API_KEY"],
        paths=("/v1/",),
        methods=("GET", "POST"),
        ca_bundle=None,
    )
    # the value is known to the run's redactor all the same
    assert KEYS["ANTHROPIC_API_KEY"] not in store.redactor.text(f"x {KEYS['ANTHROPIC_API_KEY']}")


def test_placeholders_are_random_per_run_and_secret_and_stable_within_a_run():
    first = SecretStore(AGENTS.secrets, Redactor())
    second = SecretStore(AGENTS.secrets, Redactor())
    a = first.placeholder("ANTHROPIC_API_KEY")
    assert a == first.placeholder("ANTHROPIC_API_KEY")
    assert a != first.placeholder("OPENAI_API_KEY")
    assert a != second.placeholder("ANTHROPIC_API_KEY")
    assert first.broker("OPENAI_API_KEY") == AGENTS.secrets["OPENAI_API_KEY"].broker


def test_a_ca_bundle_reaches_the_proxy_as_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN", "t-0123456789")
    grant = broker_grant(base_url_env="API_URL", ca_bundle=tmp_path / "ca.pem")
    policy = dataclasses.replace(default_policy(), secrets={"TOKEN": grant})
    plan = plan_of(node("command: [x]\nsecrets: [TOKEN]"))
    box = admit(plan, policy, {"TOKEN": "t-0123456789"})["a"]
    proxy = FakeProxy(tmp_path)
    store = SecretStore(policy.secrets, Redactor())
    runner = NodeRunner(MemoryBackend(), "run", "owner", egress=proxy, secrets=store)  # type: ignore[arg-type]
    spec = asyncio.run(
        runner._with_egress_and_secrets(runner.spec(plan.nodes["a"], box, 1), plan.nodes["a"], box)
    )
    ((_, _, (brokered,)),) = proxy.opened
    assert brokered.ca_bundle == str(tmp_path / "ca.pem")
    assert (brokered.header, brokered.scheme) == ("authorization", "Bearer ")
    assert spec.env["TOKEN"] == store.placeholder("TOKEN")
