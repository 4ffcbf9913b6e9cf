"""The seccomp profile for nodes under gVisor (runsc).

Under runc, nodes get the engine's default profile. Under gVisor that profile cannot be
used as it is on this engine: gVisor (with --oci-seccomp) does not honour the profile's
`errnoRet`, so the rule that makes `clone3` fail with ENOSYS fails it with EPERM
instead, glibc does not fall back to `clone`, and threads cannot start (Claude Code
aborts). Without any profile, a node could create user and mount namespaces inside
gVisor's kernel.

So nodes under gVisor get this profile: the syscalls gVisor's own kernel serves are
allowed (gVisor is the boundary, and its kernel itself runs under a strict host filter),
and what no node ever needs is refused with EPERM: new namespaces, mounts, keyrings,
ptrace, BPF, perf, kernel modules, clocks, reboot. `clone3` is left to gVisor, which
answers ENOSYS, so its flags cannot smuggle a namespace in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Namespace flags of clone(2)/unshare(2) (arg 0 on x86_64).
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

REFUSED = [
    # namespaces and mounts
    "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # keyrings
    "add_key", "keyctl", "request_key",
    # looking into or steering other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # kernel interfaces no workload needs
    "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
    "acct", "syslog", "vhangup", "quotactl", "lookup_dcookie", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "nfsservctl",
    "personality", "uselib", "ustat", "sysfs", "_sysctl", "get_kernel_syms",
    "query_module", "create_module", "fanotify_init", "io_uring_setup",
    "io_uring_enter", "io_uring_register",
]  # fmt: skip


def runsc_profile() -> dict[str, Any]:
    """The profile as the OCI spec (and the engine's `seccomp=` option) takes it."""
    flag_rules = [
        {
            "names": [name],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for name in ("clone", "unshare")
        for flag in NAMESPACE_FLAGS.values()
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": REFUSED, "action": "SCMP_ACT_ERRNO"}, *flag_rules],
    }


RUNSC_SECURITY_OPT = "seccomp=" + json.dumps(runsc_profile(), separators=(",", ":"))
# On Kubernetes a pod names a profile file on its node (a `Localhost` profile, relative
# to the kubelet's seccomp directory, /var/lib/kubelet/seccomp), which the operator
# installs: named by its content, so a node holding another version fails the pod's start
# instead of running it under a different filter.
RUNSC_PROFILE = json.dumps(runsc_profile(), separators=(",", ":"), sort_keys=True)
RUNSC_LOCALHOST_PROFILE = (
    f"sandbox-orch/runsc-{hashlib.sha256(RUNSC_PROFILE.encode()).hexdigest()[:16]}.json"
)


def podman_profile() -> dict[str, Any]:
    """For runc nodes on Podman, whose default profile lets a node create user, mount and
    other namespaces (`unshare -r` works): gVisor's profile, and `clone3` failing with
    ENOSYS, as Docker's default profile has it (its flags cannot be filtered; glibc then
    falls back to `clone`, whose flags are). runc honours `errnoRet`."""
    profile = runsc_profile()
    profile["syscalls"].append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    return profile


# Podman takes a profile only as a file on its own host (the API's `seccomp=` names a
# path): the backend writes it there, named by its content, before the first container.
PODMAN_PROFILE = json.dumps(podman_profile(), separators=(",", ":"), sort_keys=True)
_PODMAN_DIGEST = hashlib.sha256(PODMAN_PROFILE.encode()).hexdigest()[:16]
PODMAN_PROFILE_PATH = f"/run/sandbox-orch/seccomp/podman-{_PODMAN_DIGEST}.json"
