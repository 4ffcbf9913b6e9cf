"""The environment deny list, family by family (compared case-insensitively)."""

from __future__ import annotations

import pytest

from sandbox_orch.envnames import DENIED, HARMLESS, denied_env

from .helpers import default_policy, plan_of

FAMILIES = {
    "loader and libc": ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_ANYTHING", "GCONV_PATH",
                        "GLIBC_TUNABLES", "LOCPATH", "MALLOC_CHECK_", "HOSTALIASES"],
    "shells": ["BASH_ENV", "ENV", "BASH_FUNC_ls%%", "PS4", "PROMPT_COMMAND", "SHELLOPTS",
               "BASHOPTS", "IFS", "PATH", "PS0", "PS1", "PS2", "PS3", "PROMPT", "ZDOTDIR"],
    "git": ["GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_CONFIG_GLOBAL",
            "GIT_CONFIG_KEY_0", "GIT_CONFIG_COUNT", "GIT_ASKPASS", "GIT_EDITOR", "GIT_PAGER",
            "GIT_EXTERNAL_DIFF", "GIT_PROXY_COMMAND", "GIT_TEMPLATE_DIR"],
    "ssh": ["SSH_ASKPASS", "SSH_AUTH_SOCK", "SUDO_ASKPASS"],
    "editors and pagers": ["EDITOR", "VISUAL", "PAGER", "MANPAGER", "LESSOPEN", "LESSCLOSE",
                           "SYSTEMD_PAGER", "SYSTEMD_EDITOR", "VIMINIT", "EXINIT", "MYVIMRC",
                           "EMACSLOADPATH"],
    "python": ["PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT", "PYTHONWARNINGS"],
    "node": ["NODE_OPTIONS", "NODE_PATH", "NPM_CONFIG_SCRIPT_SHELL", "npm_config_prefix"],
    "perl and ruby": ["PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB"],
    "java": ["JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH"],
    ".net": ["DOTNET_STARTUP_HOOKS", "CORECLR_PROFILER_PATH", "COR_PROFILER_PATH",
             "COMPlus_EnableDiagnostics"],
    "other runtimes": ["PHPRC", "PHP_INI_SCAN_DIR", "R_PROFILE_USER", "R_ENVIRON_USER",
                       "R_LIBS_USER", "JULIA_LOAD_PATH", "ERL_AFLAGS", "DENO_DIR",
                       "BUN_OPTIONS", "UV_INDEX_URL", "DYLD_INSERT_LIBRARIES"],
    "proxies": ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY"],
    "configuration": ["HOME", "XDG_CONFIG_HOME", "OPENSSL_CONF"],
}  # fmt: skip


@pytest.mark.parametrize(
    "name", [name for names in FAMILIES.values() for name in names], ids=lambda n: n
)
def test_every_family_is_refused_in_any_case(name):
    for spelling in (name, name.lower(), name.upper(), name.swapcase()):
        assert denied_env(spelling) is not None, spelling


@pytest.mark.parametrize(
    "name",
    ["FOO", "DEBUG", "TERM", "LANG", "ANTHROPIC_BASE_URL", "CI", "MY_PATH", *sorted(HARMLESS)],
)
def test_ordinary_names_are_allowed(name):
    assert denied_env(name) is None


def test_the_policy_adds_names_even_harmless_ones():
    assert denied_env("foo", ["FOO"]) == "denied by the policy"
    assert denied_env("node_env", ["NODE_ENV"]) == "denied by the policy"


def test_every_entry_has_a_reason():
    assert all(why.strip() for why in DENIED.values())


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("PS1", "an interactive shell runs its command substitutions"),
        ("VIMINIT", "vim runs these commands at start (`:!cmd`)"),
        ("DOTNET_STARTUP_HOOKS", ".NET runs startup hooks and loads profilers from it"),
        ("phprc", "PHP reads php.ini (auto_prepend_file runs code) from it"),
    ],
)
def test_the_reason_is_the_families_own(name, why):
    assert denied_env(name) == why


def test_admission_names_the_reason():
    from sandbox_orch.admission import admit
    from sandbox_orch.errors import InputRefused

    text = "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    env: {GIT_SSH_COMMAND: v}\n"
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(text), default_policy())
    (problem,) = caught.value.problems
    assert "GIT_SSH_COMMAND is on the deny list (git runs commands" in str(problem)
