"""Escape suite: attacks run from inside nodes, on the real engine, under both OCI runtimes.

Every attack is a node whose command attempts the attack and prints one machine-checkable
verdict line, `ATTACK <name> <json>`. One workflow per runtime holds every attack node
(`fail_fast: false`, `--max-parallel 4`), so the containers run once per runtime; each
attack is then judged by its own test function from that run's results file. Each runtime
runs it twice: once started as due, once from containers prepared ahead of time (held by
sandbox-orch-gate while a first node runs, then released).

Runtimes: runc under `policies/default.yaml`, and runsc (gVisor) under a copy of the same
policy that only changes `isolation.oci_runtime`. Under gVisor some mechanisms differ (the
pids limit is RLIMIT_NPROC inside gVisor's kernel, for instance); the tests assert the
containment, and the verdicts record what each runtime answered.
"""

from __future__ import annotations

import contextlib
import json
import platform
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.execution import RUN_LABEL
from tests.conftest import (
    REPO,
    CliResult,
    engine_of,
    labelled_leftovers,
    podman_events,
    run_workflow,
)

pytestmark = pytest.mark.engine

SANDBOX_UID = 10001
RUNTIMES = ("runc", "runsc")
# Each runtime twice: containers started when due, and prepared ahead of time (held by
# their gate while a first node runs, then released: issue 14): the same attacks, the
# same verdicts.
RUNS = (*RUNTIMES, *(f"{runtime}-held" for runtime in RUNTIMES))
# How long the first node runs in a held run, so that every attack node's container is
# made and held meanwhile (about 20 containers; gVisor's start is slower).
HOLD_SECONDS = {"runc": 8, "runsc": 15}
PROBE_ENV = "SANDBOX_ORCH_ESCAPE_PROBE"
PROBE_VALUE = "host-secret-value-42"
ZERO_CAPS = "0" * 16
PIDS_LIMIT = 64
FORK_TARGET = 400
MEMORY_LIMIT = "64m"
MEMORY_HOG_MB = 200

# Helpers every python probe starts with. A verdict is one line, `ATTACK name {json}`.
PRELUDE = r"""
import ctypes, errno, json, os, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)

def verdict(name, **fields):
    print("ATTACK", name, json.dumps(fields, sort_keys=True), flush=True)

def code(number):
    return errno.errorcode.get(number, str(number))

def attempt(fn):
    "'allowed', or the errno name the attempt was refused with."
    try:
        fn()
    except OSError as error:
        return code(error.errno)
    return "allowed"

def syscall(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *args)
    return "allowed" if result >= 0 else code(ctypes.get_errno())

def libc_call(name, *args):
    ctypes.set_errno(0)
    result = getattr(libc, name)(*args)
    return "allowed" if result >= 0 else code(ctypes.get_errno())

def command(*argv):
    "'allowed' (exit 0), or 'exit N: first line of its complaint'."
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if done.returncode == 0:
        return "allowed"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"exit {done.returncode}: {lines[0].strip() if lines else ''}"

def in_child(fn):
    "Run fn in a forked child (so what it changes, such as namespaces, stays there)."
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            answer = str(fn())
        except BaseException as error:
            answer = "error:" + type(error).__name__
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return answer
"""

# Status lines of a process, as `Key=v1,v2` pairs, from plain sh + awk (every image).
CAPS_SHELL = r"""
fields=$(awk -F'\t' '/^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Uid|Gid):/ {
  k=$1; sub(":", "", k); v=$2; for (i = 3; i <= NF; i++) v = v "," $i; printf " %s=%s", k, v
}' /proc/self/status)
echo "ATTACK caps$fields kernel=$(uname -r)"
"""

PROBES: dict[str, str] = {}

PROBES["caps"] = r"""
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    status[key] = value.strip()
keys = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters")
PR_GET_SECCOMP, PR_GET_NO_NEW_PRIVS = 21, 39
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
verdict("caps", kernel=os.uname().release, uid=os.getuid(), euid=os.geteuid(),
        prctl_no_new_privs=libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
        prctl_seccomp=libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0),
        **{key: status.get(key, "absent") for key in keys})
"""

PROBES["rootfs"] = r"""
out = {}
for path in ("/escape-probe", "/etc/escape-probe", "/usr/bin/escape-probe", "/var/tmp/escape-probe"):
    out["create:" + path] = attempt(lambda: open(path, "w").close())
for path in ("/etc/passwd", "/etc/shadow", "/usr/bin/python3", "/bin/sh"):
    out["append:" + path] = attempt(lambda: open(path, "a").close())
out["mkdir:/usr/lib/escape-probe"] = attempt(lambda: os.mkdir("/usr/lib/escape-probe"))
out["rename:/etc/hostname"] = attempt(lambda: os.rename("/etc/hostname", "/etc/hostname.x"))
out["unlink:/etc/passwd"] = attempt(lambda: os.unlink("/etc/passwd"))
out["control:/tmp"] = attempt(lambda: open("/tmp/escape-probe", "w").close())
verdict("rootfs", **out)
"""

PROBES["procsys"] = r"""
out = {}
# If it were writable, "h" only prints the SysRq help to the kernel log.
def sysrq():
    with open("/proc/sysrq-trigger", "w") as handle:
        handle.write("h")
out["/proc/sysrq-trigger"] = attempt(sysrq)
# /proc/sys and the cgroup files: write back the value just read, so that even a write
# that got through would change nothing.
def rewrite(path):
    with open(path) as handle:
        value = handle.read()
    with open(path, "w") as handle:
        handle.write(value)
for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname",
             "/proc/sys/kernel/modprobe", "/proc/sys/kernel/domainname",
             "/proc/sys/vm/overcommit_memory",
             "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    out[path] = attempt(lambda: rewrite(path))
verdict("procsys", **out)
"""

PROBES["mount"] = r"""
MS_BIND, MS_REMOUNT = 4096, 32
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
verdict("mount",
        tmpfs_cmd=command("mount", "-t", "tmpfs", "none", "/mnt"),
        bind_cmd=command("mount", "--bind", "/tmp", "/mnt"),
        remount_rw_cmd=command("mount", "-o", "remount,rw", "/"),
        tmpfs_syscall=libc_call("mount", b"none", b"/mnt", b"tmpfs", 0, None),
        bind_syscall=libc_call("mount", b"/tmp", b"/mnt", None, MS_BIND, None),
        remount_rw_syscall=libc_call("mount", None, b"/", None, MS_REMOUNT, None),
        proc_syscall=libc_call("mount", b"proc", b"/mnt", b"proc", 0, None))
"""

PROBES["unshare"] = r"""
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x20000, 0x40000000, 0x20000000
libc.unshare.argtypes = [ctypes.c_int]
def user_then(action):
    "Enter a new user namespace, then try what being its root would allow."
    def attack():
        if libc_call("unshare", CLONE_NEWUSER) != "allowed":
            return "no-userns"
        return action()
    return lambda: in_child(attack)
def raw_socket():
    return attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
def write_passwd():
    return attempt(lambda: open("/etc/passwd", "a").close())
verdict("unshare",
        user_cmd=command("unshare", "-Ur", "id", "-u"),
        mount_cmd=command("unshare", "-m", "true"),
        net_cmd=command("unshare", "-n", "true"),
        user_syscall=in_child(lambda: libc_call("unshare", CLONE_NEWUSER)),
        mount_syscall=in_child(lambda: libc_call("unshare", CLONE_NEWNS)),
        net_syscall=in_child(lambda: libc_call("unshare", CLONE_NEWNET)),
        pid_syscall=in_child(lambda: libc_call("unshare", CLONE_NEWPID)),
        userns_mount_tmpfs_cmd=command("unshare", "-Urm", "mount", "-t", "tmpfs", "none", "/mnt"),
        userns_raw_socket=user_then(raw_socket)(),
        userns_write_passwd=user_then(write_passwd)(),
        uid_after=os.getuid())
"""

PROBES["keyctl"] = r"""
SYS_ADD_KEY, SYS_KEYCTL = 248, 250
KEY_SPEC_SESSION_KEYRING, KEYCTL_GET_KEYRING_ID, KEYCTL_JOIN_SESSION_KEYRING = -3, 0, 1
L = ctypes.c_long
verdict("keyctl",
        add_key=syscall(SYS_ADD_KEY, ctypes.c_char_p(b"user"), ctypes.c_char_p(b"escape-probe"),
                        ctypes.c_char_p(b"secret"), ctypes.c_size_t(6), L(KEY_SPEC_SESSION_KEYRING)),
        get_keyring_id=syscall(SYS_KEYCTL, L(KEYCTL_GET_KEYRING_ID), L(KEY_SPEC_SESSION_KEYRING), L(0)),
        join_session=syscall(SYS_KEYCTL, L(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_char_p(b"escape")))
"""

PROBES["rawsock"] = r"""
ETH_P_ALL = 0x0003
verdict("rawsock",
        inet_icmp=attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
        inet_raw=attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)),
        inet6_icmp=attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
        packet_raw=attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))),
        packet_dgram=attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))))
"""

PROBES["engine-socket"] = r"""
import stat
paths = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
         "/var/run/containerd/containerd.sock", "/run/docker/containerd/containerd.sock",
         "/run/runsc", "/run/docker/runtime-runc")
def connect(path):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2)
    try:
        client.connect(path)
    finally:
        client.close()
out = {}
for path in paths:
    out["exists:" + path] = os.path.lexists(path)
    out["connect:" + path] = attempt(lambda: connect(path))
# Any Unix socket anywhere in the file system (a socket mounted in under another name).
sockets = []
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys"):
        dirs[:] = []
        continue
    for name in dirs + files:
        path = os.path.join(root, name)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                sockets.append(path)
        except OSError:
            pass
out["sockets_found"] = sockets
verdict("engine-socket", **out)
"""

PROBES["network"] = r"""
def interfaces_from_proc():
    lines = open("/proc/net/dev").read().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines if ":" in line)
def tcp(host, port):
    started = time.monotonic()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(2)
    try:
        client.connect((host, port))
        result = "allowed"
    except socket.timeout:
        result = "timeout"
    except OSError as error:
        result = code(error.errno)
    finally:
        client.close()
    return result, round(time.monotonic() - started, 3)
def udp(host, port):
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.sendto(b"\x00", (host, port))
        return "allowed"
    except OSError as error:
        return code(error.errno)
    finally:
        client.close()
def resolve(name):
    try:
        return "resolved:" + ",".join(sorted({a[4][0] for a in socket.getaddrinfo(name, 443)}))
    except socket.gaierror as error:
        return "gaierror:" + str(error.errno)
out = {"sys_class_net": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else "absent",
       "proc_net_dev": interfaces_from_proc()}
out["tcp:1.1.1.1:53"], out["tcp_s:1.1.1.1:53"] = tcp("1.1.1.1", 53)
out["tcp:172.17.0.1:2375"], out["tcp_s:172.17.0.1:2375"] = tcp("172.17.0.1", 2375)
out["udp:1.1.1.1:53"] = udp("1.1.1.1", 53)
for name in ("example.com", "registry-1.docker.io", "host.docker.internal", "gateway.docker.internal"):
    out["dns:" + name] = resolve(name)
verdict("network", **out)
"""

PROBES["env"] = r"""
import glob
sources = {"os.environ": "\n".join(f"{k}={v}" for k, v in os.environ.items())}
for path in ["/proc/self/environ", "/proc/1/environ", *glob.glob("/proc/[0-9]*/environ")]:
    try:
        sources[path] = open(path, "rb").read().replace(b"\0", b"\n").decode("utf-8", "replace")
    except OSError as error:
        sources[path] = "unreadable:" + code(error.errno)
sources["env_cmd"] = subprocess.run(["env"], capture_output=True, text=True).stdout
for source, text in sources.items():
    for line in text.splitlines():
        print("ENV", source, line)
verdict("env", sources=sorted(sources), home=os.environ.get("HOME"))
"""

PROBES["ptrace"] = r"""
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE, WALL = 16, 17, 0x4206, 0x40000000
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def seize():
    # Does not stop PID 1; the tracer's exit detaches it.
    return libc_call("ptrace", PTRACE_SEIZE, 1, None, None)
def attach():
    # Stops PID 1: on success, wait for the stop and detach at once, or the container
    # would hang with a stopped init.
    answer = libc_call("ptrace", PTRACE_ATTACH, 1, None, None)
    if answer == "allowed":
        os.waitpid(1, WALL)
        libc_call("ptrace", PTRACE_DETACH, 1, None, None)
    return answer
def read_mem():
    start = int(open("/proc/1/maps").readline().split("-")[0], 16)
    with open("/proc/1/mem", "rb") as handle:
        handle.seek(start)
        assert len(handle.read(16)) == 16
def pid1_exe():
    try:
        return os.readlink("/proc/1/exe")
    except OSError as error:
        return "unreadable:" + code(error.errno)
verdict("ptrace",
        pid1=pid1_exe(),
        pid1_uids=open("/proc/1/status").read().split("Uid:")[1].split()[:4],
        seize_pid1=in_child(seize),
        attach_pid1=in_child(attach),
        proc1_mem=attempt(read_mem),
        process_vm_readv=syscall(310, ctypes.c_long(1), None, ctypes.c_ulong(0), None, ctypes.c_ulong(0), ctypes.c_ulong(0)))
"""

PROBES["privesc"] = r"""
import shutil, stat
out = {"setuid0": attempt(lambda: os.setuid(0)),
       "setresuid0": attempt(lambda: os.setresuid(0, 0, 0)),
       "setgid0": attempt(lambda: os.setgid(0)),
       "setgroups0": attempt(lambda: os.setgroups([0]))}
# A setuid copy in a writable place: it stays ours (uid 10001), and it cannot run (noexec).
for directory in ("/tmp", "/dev/shm"):
    copy = directory + "/escape-suid"
    try:
        shutil.copy("/usr/bin/python3", copy)
        os.chmod(copy, 0o4755)
        info = os.stat(copy)
        out["suid_owner:" + directory] = info.st_uid
        out["suid_bit_set:" + directory] = bool(info.st_mode & stat.S_ISUID)
        done = subprocess.run([copy, "-c", "import os; print(os.geteuid())"],
                              capture_output=True, text=True)
        out["suid_exec:" + directory] = "euid=" + done.stdout.strip()
    except OSError as error:
        out["suid_exec:" + directory] = code(error.errno)
# Files with setuid/setgid bits on the image's file system, which no-new-privileges neuters.
found = []
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev", "/tmp"):
        dirs[:] = []
        continue
    for name in files:
        try:
            if os.lstat(os.path.join(root, name)).st_mode & 0o6000:
                found.append(os.path.join(root, name))
        except OSError:
            pass
out["setuid_files"] = found
out["uids"] = list(os.getresuid())
out["gids"] = list(os.getresgid())
verdict("privesc", **out)
"""

PROBES["pids"] = rf"""
import resource
forked, failure, children = 0, None, []
read_end, write_end = os.pipe()
for _ in range({FORK_TARGET}):
    try:
        pid = os.fork()
    except OSError as error:
        failure = code(error.errno)
        break
    if pid == 0:  # the child waits for the parent to let go, then leaves
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    children.append(pid)
    forked += 1
os.close(write_end)
for pid in children:
    os.waitpid(pid, 0)
try:
    cgroup = open("/sys/fs/cgroup/pids/pids.max").read().strip()
except OSError as error:
    cgroup = "unreadable:" + code(error.errno)
verdict("pids", forked=forked, failure=failure, pids_max=cgroup,
        rlimit_nproc=list(resource.getrlimit(resource.RLIMIT_NPROC)))
"""

PROBES["memory"] = rf"""
held = []
try:
    for megabytes in range(10, {MEMORY_HOG_MB} + 1, 10):
        held.append(b"\x01" * (10 * 1024 * 1024))  # touched: every page is really used
        print("held_mb", megabytes, flush=True)
except MemoryError:
    verdict("memory", result="MemoryError", held_mb=10 * len(held))
    sys.exit(3)
verdict("memory", result="allocated", held_mb=10 * len(held))
"""


def _python_node(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "runtime": "python",
        "command": ["python3", "-c", PRELUDE + PROBES[name]],
        "timeout": "1m",
        **fields,
    }


def escape_workflow(held_after: float | None = None) -> str:
    """Every attack node; with `held_after`, each needs a first node that runs that long,
    so that their containers are prepared ahead of time and held meanwhile."""
    nodes: dict[str, Any] = {}
    for image in ("shell", "python", "node"):
        nodes[f"caps-{image}"] = {"runtime": image, "command": CAPS_SHELL, "timeout": "1m"}
    for name in PROBES:
        if name not in ("pids", "memory"):
            nodes[name] = _python_node(name)
    nodes["pids"] = _python_node("pids", resources={"pids": PIDS_LIMIT})
    nodes["memory"] = _python_node("memory", resources={"memory": MEMORY_LIMIT})
    if held_after is not None:
        for node in nodes.values():
            node["needs"] = [FIRST]
        nodes[FIRST] = {"runtime": "shell", "command": ["sleep", str(held_after)]}
    workflow = {"version": 1, "name": "escape-suite", "fail_fast": False, "nodes": nodes}
    return json.dumps(workflow, indent=2)  # JSON is YAML, and it quotes the scripts safely


FIRST = "first"  # a held run's first node


@dataclass
class EscapeRun:
    runtime: str
    result: CliResult
    leftovers: list[str]
    seconds: float
    held: bool = False
    created: dict[str, float] = field(default_factory=dict)  # node -> its container's create

    @property
    def results(self) -> dict[str, Any]:
        assert self.result.results is not None, self.result.stderr
        return self.result.results

    def node(self, name: str) -> dict[str, Any]:
        return self.results["nodes"][name]

    def verdict(self, node: str, attack: str | None = None) -> dict[str, Any]:
        """The attack's verdict line, after checking the run ran where it says and left
        nothing behind."""
        assert self.leftovers == [], self.leftovers
        found = self.node(node)
        assert found["sandbox"]["oci_runtime"] == self.runtime
        for line in found["stdout_tail"].splitlines():
            if line.startswith(f"ATTACK {attack or node} "):
                rest = line.split(" ", 2)[2]
                if rest.startswith("{"):
                    return json.loads(rest)
                return dict(item.split("=", 1) for item in rest.split())
        raise AssertionError(
            f"{node}: no verdict ({found['status']}, exit {found['exit_code']})\n"
            f"stdout: {found['stdout_tail']}\nstderr: {found['stderr_tail']}"
        )


# make test-podman configures runc only: Podman cannot give runsc the arguments it needs
# here (--network=none, --host-uds=open; ENGINE.md), so gVisor is Docker's alone.
PODMAN_RUNSC = "gVisor (runsc) is not set up under Podman (make test-podman: runc only)"


def _policy_for(runtime: str, directory: Path) -> Path:
    default = REPO / "policies" / "default.yaml"
    if runtime == "runc":
        return default
    text = default.read_text()
    assert "oci_runtime: runc" in text
    path = directory / "default-runsc.yaml"
    path.write_text(text.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    return path


@pytest.fixture(scope="module", params=RUNS)
def escape_run(request, tmp_path_factory, docker_client, built_images) -> EscapeRun:
    """Every attack node, run once per runtime and way of starting. The `workdir` fixture
    is per test, so this module-scoped run makes its own scratch directory and run store
    the same way."""
    runtime, held = request.param.removesuffix("-held"), request.param.endswith("-held")
    if runtime == "runsc" and engine_of(docker_client).podman:
        pytest.skip(PODMAN_RUNSC)
    directory = tmp_path_factory.mktemp(f"escape-{request.param}")
    env = {"SANDBOX_ORCH_HOME": str(directory / "store"), PROBE_ENV: PROBE_VALUE}
    policy = _policy_for(runtime, directory)
    workflow = escape_workflow(HOLD_SECONDS[runtime] if held else None)
    creations, started = _Creations(docker_client), time.monotonic()
    result = run_workflow(
        directory, workflow, "--policy", str(policy), "--max-parallel", "4", "--ahead", "64",
        env=env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.results is not None, result.stderr
    run_id = result.results["run_id"]
    leftovers = labelled_leftovers(docker_client, run_id)
    return EscapeRun(runtime, result, leftovers, seconds, held, creations.of_run(run_id))


class _Creations:
    """Every container the engine creates while it is open, with when. Docker's event
    history is short and shared: it is read live. Podman's streamed events arrive late or
    not at all (4.3): its log is asked after the run instead."""

    def __init__(self, docker_client) -> None:
        self._client, self._since = docker_client, time.time()
        self._podman = engine_of(docker_client).podman
        self._seen: list[dict[str, Any]] = []
        if not self._podman:
            filters = {"type": "container", "event": "create"}
            self._events = docker_client.events(since=self._since, filters=filters, decode=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # ends when closed
            self._seen.extend(self._events)

    def of_run(self, run_id: str) -> dict[str, float]:
        """When each node's first container was created."""
        if self._podman:
            filters = {"type": "container", "event": "create"}
            self._seen = podman_events(self._client, self._since, filters)
        else:
            self._events.close()
            self._reader.join(timeout=10)
        created: dict[str, float] = {}
        for event in self._seen:
            labels = event["Actor"]["Attributes"]
            if labels.get(RUN_LABEL) == run_id:
                created.setdefault(labels["sandbox-orch.node"], event["timeNano"] / 1e9)
        return created


def on_runtimes(**weaknesses: str) -> pytest.MarkDecorator:
    """Both runtimes (each either way of starting), as the fixture's own params would be;
    a runtime named here is one where the attack is known to succeed: xfail(strict), so a
    fix turns the test red until the mark is removed, and a regression elsewhere stays
    red."""
    return pytest.mark.parametrize(
        "escape_run",
        [
            pytest.param(
                run,
                id=run,
                marks=[pytest.mark.xfail(strict=True, reason=weaknesses[runtime])]
                if (runtime := run.removesuffix("-held")) in weaknesses
                else [],
            )
            for run in RUNS
        ],
        indirect=True,
    )


# Known weaknesses: attacks that succeed on one runtime (the report has the details).
RUNC_PTRACE = (
    "runc: PID 1 (tini) runs as uid 10001 like the node and is dumpable, and the "
    "default seccomp profile allows ptrace: PTRACE_SEIZE/PTRACE_ATTACH of PID 1 and "
    "reading /proc/1/mem succeed (no privilege gained; a node can stop its own init)"
)


def test_run_completed_and_left_nothing_behind(escape_run):
    run = escape_run
    print(f"\n[escape] {run.runtime}: workflow ran in {run.seconds:.1f}s")
    # Only the memory hog is expected to fail; every other node runs to its verdict.
    assert run.result.exit_code == 1, run.result.stderr
    failed = {name for name, node in run.results["nodes"].items() if node["status"] != "succeeded"}
    assert failed == {"memory"}, {n: run.node(n)["stderr_tail"][-500:] for n in failed}
    assert {node["sandbox"]["oci_runtime"] for node in run.results["nodes"].values()} == {
        run.runtime
    }
    assert run.leftovers == []
    assert run.seconds < 120
    if run.held:  # every attack ran in a container made while the first node still ran
        first_ended = datetime.fromisoformat(run.node(FIRST)["finished_at"]).timestamp()
        late = {
            n: t - first_ended for n, t in run.created.items() if n != FIRST and t > first_ended
        }
        assert not late, late
        assert len(run.created) == len(run.results["nodes"])


@pytest.mark.parametrize("image", ["shell", "python", "node"])
def test_capabilities_are_empty(escape_run, image):
    found = escape_run.verdict(f"caps-{image}", "caps")
    assert found["Uid"] == ",".join([str(SANDBOX_UID)] * 4)
    assert found["Gid"] == ",".join([str(SANDBOX_UID)] * 4)
    if escape_run.runtime == "runc":
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert found[key] == ZERO_CAPS, (key, found)
        assert found["NoNewPrivs"] == "1"
        assert found["Seccomp"] == "2"  # filter mode: the engine's default profile
        assert found["kernel"] == platform.release()
    else:
        # gVisor's own kernel answers (not the host's) and has no CapAmb/NoNewPrivs lines.
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
            assert found[key] == ZERO_CAPS, (key, found)
        assert found.get("CapAmb", ZERO_CAPS) == ZERO_CAPS
        assert found["kernel"] != platform.release()


def test_capabilities_and_no_new_privs_seen_by_python(escape_run):
    found = escape_run.verdict("caps")
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert found[key] == ZERO_CAPS, (key, found)
    assert found["CapAmb"] in (ZERO_CAPS, "absent")  # absent: gVisor does not report it
    assert (found["uid"], found["euid"]) == (SANDBOX_UID, SANDBOX_UID)
    assert found["prctl_no_new_privs"] == 1  # asked of the kernel, under both runtimes


def test_seccomp_filter_is_applied(escape_run):
    found = escape_run.verdict("caps")
    assert found["Seccomp"] == "2", found
    assert found["prctl_seccomp"] == 2, found


def test_root_filesystem_is_not_writable(escape_run):
    found = escape_run.verdict("rootfs")
    assert found.pop("control:/tmp") == "allowed"  # the control: /tmp is writable
    for attack, answer in found.items():
        # EACCES: root-owned places refuse uid 10001 first (gVisor checks that before
        # the read-only mount); world-writable /var/tmp shows the read-only mount (EROFS).
        assert answer in ("EROFS", "EACCES"), (attack, answer)
    assert found["create:/var/tmp/escape-probe"] == "EROFS"
    assert found["mkdir:/usr/lib/escape-probe"] == "EROFS"


def test_proc_and_sys_are_not_writable(escape_run):
    found = escape_run.verdict("procsys")
    for path, answer in found.items():
        # ENOENT: the file is masked (runc) or not implemented at all (gVisor).
        assert answer in ("EROFS", "EACCES", "EPERM", "ENOENT"), (path, answer)
    if escape_run.runtime == "runc":
        assert found["/proc/sys/kernel/core_pattern"] == "EROFS"
        assert found["/sys/fs/cgroup/pids/pids.max"] == "EROFS"


def test_mount_is_refused(escape_run):
    found = escape_run.verdict("mount")
    for attack, answer in found.items():
        assert answer != "allowed", (attack, found)
        if attack.endswith("_syscall"):
            assert answer == "EPERM", (attack, answer)


def test_user_namespace_is_refused(escape_run):
    found = escape_run.verdict("unshare")
    assert found["user_cmd"] != "allowed", found
    assert found["user_syscall"] == "EPERM", found


def test_other_namespaces_are_refused(escape_run):
    found = escape_run.verdict("unshare")
    assert found["uid_after"] == SANDBOX_UID
    for attack in ("mount_cmd", "net_cmd"):
        assert found[attack] != "allowed", (attack, found)
    for attack in ("net_syscall", "pid_syscall"):
        assert found[attack] == "EPERM", (attack, found)
    # Even where a user namespace can be made (gVisor), its root cannot mount or
    # write the image.
    assert found["userns_mount_tmpfs_cmd"] != "allowed", found
    assert found["userns_write_passwd"] in ("no-userns", "EACCES", "EROFS"), found


def test_mount_namespace_is_refused(escape_run):
    found = escape_run.verdict("unshare")
    assert found["mount_syscall"] == "EPERM", found


def test_user_namespace_gives_no_raw_socket(escape_run):
    found = escape_run.verdict("unshare")
    assert found["userns_raw_socket"] in ("no-userns", "EPERM"), found


def test_kernel_keyring_is_refused(escape_run):
    found = escape_run.verdict("keyctl")
    for attack, answer in found.items():
        assert answer != "allowed", (attack, found)
    if escape_run.runtime == "runc":  # the engine's default seccomp profile
        assert found == {"add_key": "EPERM", "get_keyring_id": "EPERM", "join_session": "EPERM"}


def test_raw_sockets_are_refused(escape_run):
    found = escape_run.verdict("rawsock")
    for attack, answer in found.items():
        assert answer == "EPERM", (attack, found)


def test_engine_sockets_are_absent(escape_run):
    found = escape_run.verdict("engine-socket")
    assert found.pop("sockets_found") == []  # no Unix socket anywhere, under any name
    for key, answer in found.items():
        if key.startswith("exists:"):
            assert answer is False, key
        else:
            assert answer == "ENOENT", (key, answer)


def test_network_is_loopback_only(escape_run):
    found = escape_run.verdict("network")
    assert found["proc_net_dev"] == ["lo"]
    # gVisor 2024-07-29's sysfs has no /sys/class/net at all; /proc/net/dev is its list.
    allowed = (["lo"], "absent") if escape_run.runtime == "runsc" else (["lo"],)
    assert found["sys_class_net"] in allowed, found
    for target in ("1.1.1.1:53", "172.17.0.1:2375"):
        # ENETUNREACH (runc) / EHOSTUNREACH (gVisor): refused at once, not timed out.
        assert found[f"tcp:{target}"] in ("ENETUNREACH", "EHOSTUNREACH"), (target, found)
        assert found[f"tcp_s:{target}"] < 1.0, (target, found)
    assert found["udp:1.1.1.1:53"] in ("ENETUNREACH", "EHOSTUNREACH")
    for key, answer in found.items():
        if key.startswith("dns:"):
            assert answer.startswith("gaierror:"), (key, answer)


def test_host_environment_does_not_leak(escape_run):
    found = escape_run.verdict("env")
    assert found["home"] == "/tmp"
    assert {"os.environ", "/proc/self/environ", "/proc/1/environ", "env_cmd"} <= set(
        found["sources"]
    )
    dumped = escape_run.node("env")["stdout_tail"]
    assert "sandbox-orch: " not in dumped  # nothing of the dump was dropped
    # The control: the dump really is in the output, from each source.
    for source in ("os.environ", "/proc/self/environ", "/proc/1/environ", "env_cmd"):
        assert f"ENV {source} PATH=" in dumped, source
    for name, node in escape_run.results["nodes"].items():
        for stream in ("stdout_tail", "stderr_tail"):
            assert PROBE_VALUE not in node[stream], (name, stream)
            assert PROBE_ENV not in node[stream], (name, stream)


@on_runtimes(runc=RUNC_PTRACE)
def test_ptrace_of_pid1_is_refused(escape_run):
    found = escape_run.verdict("ptrace")
    assert found["pid1_uids"] == [str(SANDBOX_UID)] * 4  # init is never root
    for attack in ("seize_pid1", "attach_pid1", "proc1_mem", "process_vm_readv"):
        assert found[attack] != "allowed", (attack, found)


def test_no_privilege_escalation(escape_run):
    found = escape_run.verdict("privesc")
    for attack in ("setuid0", "setresuid0", "setgid0", "setgroups0"):
        assert found[attack] == "EPERM", (attack, found)
    for directory in ("/tmp", "/dev/shm"):
        # The bit can be set on one's own copy, but it is owned by 10001 and cannot run
        # at all (noexec); nosuid and no-new-privileges would ignore the bit anyway.
        assert found[f"suid_owner:{directory}"] == SANDBOX_UID
        assert found[f"suid_exec:{directory}"] == "EACCES", found
    assert found["setuid_files"] == []
    assert found["uids"] == [SANDBOX_UID] * 3
    assert found["gids"] == [SANDBOX_UID] * 3


def test_pids_limit_holds(escape_run):
    found = escape_run.verdict("pids")
    sandbox = escape_run.node("pids")["sandbox"]
    assert sandbox["limits"]["pids"] == PIDS_LIMIT
    assert found["forked"] < PIDS_LIMIT, found  # of FORK_TARGET attempted
    assert found["failure"] == "EAGAIN", found
    if escape_run.runtime == "runc":
        assert "cgroup" in sandbox["pids_enforced_by"]
        assert found["pids_max"] == str(PIDS_LIMIT)
    else:
        assert "RLIMIT_NPROC" in sandbox["pids_enforced_by"]
        assert found["rlimit_nproc"] == [PIDS_LIMIT, PIDS_LIMIT]


def test_memory_limit_holds(escape_run):
    node = escape_run.node("memory")
    assert escape_run.leftovers == []
    assert node["sandbox"]["oci_runtime"] == escape_run.runtime
    assert node["sandbox"]["limits"]["memory"] == MEMORY_LIMIT
    held = [
        int(line.split()[1])
        for line in node["stdout_tail"].splitlines()
        if line.startswith("held_mb ")
    ]
    assert held, node  # the control: the hog did start allocating
    assert max(held) < 64, held  # never held more than the limit, let alone 200 MB
    assert '"result": "allocated"' not in node["stdout_tail"], node
    assert node["status"] == "failed", node
    # Both runtimes: the engine reports the OOM kill (gVisor's sandbox is killed whole).
    assert node["oom_killed"] is True, node
    assert node["exit_code"] == 137, node
