"""Environment names a workflow may never set for a node, whatever the policy says.

Each is a way to make a program in the node run other code, load other libraries or
connect elsewhere than it would: the node's own command is the workflow's to choose, but
the programs it starts (an agent, git, a shell, an interpreter) must run as shipped.
Families with open-ended members are refused by prefix. Compared case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

# name (or prefix, ending in `*`) -> why; grouped as README.md lists them.
DENIED: dict[str, str] = {
    # The dynamic loader and libc.
    "LD_*": "the dynamic loader loads or audits other libraries",
    "GCONV_PATH": "glibc loads character-set modules from it",
    "GLIBC_TUNABLES": "changes glibc's behaviour (and was an exploit vector)",
    "LOCPATH": "glibc loads locale files from it",
    "NLSPATH": "libc reads message catalogs from it",
    "HOSTALIASES": "redirects name resolution",
    "RESOLV_*": "changes name resolution",
    "LOCALDOMAIN": "changes name resolution",
    "MALLOC_*": "changes the allocator's behaviour",
    "DYLD_*": "the macOS dynamic loader loads other libraries (an image may bring its own)",
    # Shells.
    "BASH_ENV": "bash runs this file first",
    "ENV": "sh runs this file first",
    "BASH_FUNC_*": "defines shell functions that replace commands",
    "BASHOPTS": "sets shell options",
    "SHELLOPTS": "sets shell options",
    "PS4": "runs command substitutions when tracing",
    "PS0": "an interactive bash runs its command substitutions",
    "PS1": "an interactive shell runs its command substitutions",
    "PS2": "an interactive shell runs its command substitutions",
    "PS3": "a shell's select runs its command substitutions",
    "PROMPT": "zsh runs its command substitutions (PROMPT_SUBST)",
    "ZDOTDIR": "zsh runs its startup files from it",
    "PROMPT_COMMAND": "runs a command before each prompt",
    "IFS": "changes how shells split words",
    "CDPATH": "changes where cd goes",
    "PATH": "chooses which program a name runs",
    "SHELL": "chooses the shell programs start",
    # Git.
    "GIT_*": "git runs commands (GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_*, ...) from it",
    # ssh and askpass helpers.
    "SSH_*": "ssh runs helpers (SSH_ASKPASS) and uses agents from it",
    "SUDO_ASKPASS": "runs a password helper",
    # Editors and pagers: programs start them.
    "EDITOR": "programs run it as the editor",
    "VISUAL": "programs run it as the editor",
    "PAGER": "programs run it as the pager",
    "MANPAGER": "man runs it",
    "MANOPT": "man options",
    "LESS*": "less runs LESSOPEN/LESSCLOSE and reads its options from LESS*",
    "BROWSER": "programs run it",
    "SYSTEMD_PAGER": "systemd's tools run it as the pager",
    "SYSTEMD_EDITOR": "systemd's tools run it as the editor",
    "VIMINIT": "vim runs these commands at start (`:!cmd`)",
    "EXINIT": "ex and vi run these commands at start",
    "MYVIMRC": "vim reads its startup commands from it",
    "EMACSLOADPATH": "Emacs loads Lisp code from it",
    # Language runtimes: options and module paths.
    "PYTHON*": "Python runs or imports code from PYTHONSTARTUP, PYTHONPATH, PYTHONHOME, ...",
    "PIP_*": "pip options (index, config)",
    "VIRTUAL_ENV": "chooses a Python environment",
    "NODE_*": "Node.js options and module paths (NODE_OPTIONS, NODE_PATH, ...)",
    "NPM_CONFIG_*": "npm configuration (scripts, registry)",
    "YARN_*": "yarn configuration",
    "PERL*": "Perl options and library paths (PERL5OPT, PERL5LIB, PERLLIB, ...)",
    "RUBY*": "Ruby options and library paths (RUBYOPT, RUBYLIB)",
    "GEM_*": "Ruby gem paths",
    "BUNDLE_*": "bundler configuration",
    "JAVA_TOOL_OPTIONS": "JVM options (agents)",
    "_JAVA_OPTIONS": "JVM options (agents)",
    "JDK_JAVA_OPTIONS": "JVM options (agents)",
    "CLASSPATH": "where the JVM loads classes from",
    "LUA_*": "Lua module paths and init code",
    "TCLLIBPATH": "Tcl library path",
    "GOFLAGS": "go command options",
    "CARGO_*": "cargo configuration (build scripts, runners)",
    "RUSTC_WRAPPER": "runs instead of rustc",
    "DOTNET_*": ".NET runs startup hooks and loads profilers from it",
    "CORECLR_*": ".NET loads a profiler library from it",
    "COR_*": ".NET Framework loads a profiler library from it",
    "COMPLUS_*": ".NET runtime options (profilers, startup hooks)",
    "PHPRC": "PHP reads php.ini (auto_prepend_file runs code) from it",
    "PHP_INI_SCAN_DIR": "PHP reads more php.ini files from it",
    "R_PROFILE*": "R runs this profile at start",
    "R_ENVIRON*": "R reads its environment (and R_PROFILE) from it",
    "R_LIBS*": "R loads packages from it",
    "JULIA_*": "Julia options, load and depot paths (startup code)",
    "ERL_*": "Erlang VM options and library paths",
    "DENO_*": "Deno options and module paths",
    "BUN_*": "Bun options",
    "UV_*": "uv configuration (index, Python, config file)",
    # Where a program connects: egress goes through the proxy the tool sets.
    "HTTP_PROXY": "routes requests elsewhere",
    "HTTPS_PROXY": "routes requests elsewhere",
    "FTP_PROXY": "routes requests elsewhere",
    "ALL_PROXY": "routes requests elsewhere",
    "NO_PROXY": "bypasses the proxy",
    # Where programs look for their configuration and libraries.
    "HOME": "programs read their configuration (and run hooks) from it",
    "XDG_CONFIG_*": "programs read their configuration from it",
    "XDG_DATA_DIRS": "programs load data and plugins from it",
    "OPENSSL_CONF": "OpenSSL loads engines and modules named in it",
    "OPENSSL_MODULES": "OpenSSL loads modules from it",
    "OPENSSL_ENGINES": "OpenSSL loads engines from it",
    "GTK_*": "GTK loads modules from it",
    "QT_PLUGIN_PATH": "Qt loads plugins from it",
    "TERMINFO*": "terminfo databases (parsed by programs)",
}

# Members of a refused family that only describe, never run or load anything.
HARMLESS = frozenset({
    "NODE_ENV", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
    "PYTHONHASHSEED", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
})  # fmt: skip

_EXACT = {name: why for name, why in DENIED.items() if not name.endswith("*")}
_PREFIXES = tuple((name[:-1], why) for name, why in DENIED.items() if name.endswith("*"))


def denied_env(name: str, policy_deny: Iterable[str] = ()) -> str | None:
    """Why `name` may not be set for a node, or None. The policy's own list adds names."""
    upper = name.upper()
    if upper in {denied.upper() for denied in policy_deny}:
        return "denied by the policy"
    if upper in HARMLESS:
        return None
    if upper in _EXACT:
        return _EXACT[upper]
    for prefix, why in _PREFIXES:
        if upper.startswith(prefix):
            return why
    return None
