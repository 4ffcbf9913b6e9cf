"""Pod Security Standards "restricted" (Kubernetes 1.33+), checked over a Pod spec, plus
our own rules the profile does not have. The schemas check shapes, not this.

`violations(pod)` names every rule the pod breaks, one line each; an empty list passes.
Written from the published profile (kubernetes.io/docs/concepts/security/pod-security-
standards), so it also judges pods we did not generate (a future read-back).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}
SELINUX_TYPES = {
    None,
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
}


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(kind) or []:
            yield f"{kind}[{container.get('name')}]", container


def violations(pod: Mapping[str, Any]) -> list[str]:
    """Every rule of the restricted profile (and ours) that `pod` (a PodSpec) breaks."""
    found = [f"{field} is set" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    pod_sc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume.get('name')}: type {sorted(kinds)} is not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')} is not allowed")
    found += _identity("pod", pod_sc)
    if pod_sc.get("windowsOptions", {}).get("hostProcess"):
        found.append("pod: windowsOptions.hostProcess is set")
    found += _ours(pod)
    for where, container in _containers(pod):
        found += _container(where, container, pod_sc)
    return found


def _identity(where: str, sc: Mapping[str, Any]) -> list[str]:
    """Rules that apply at both levels when the field is set."""
    found = []
    if sc.get("runAsUser") == 0:
        found.append(f"{where}: runAsUser is 0")
    if sc.get("runAsNonRoot") is False:
        found.append(f"{where}: runAsNonRoot is false")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_OK:
        found.append(f"{where}: seccompProfile is {seccomp}")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}: seLinuxOptions are not allowed")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in SECCOMP_OK:
        found.append(f"{where}: appArmorProfile is {apparmor}")
    return found


def _container(where: str, c: Mapping[str, Any], pod_sc: Mapping[str, Any]) -> list[str]:
    sc = c.get("securityContext") or {}
    found = _identity(where, sc)
    if sc.get("privileged"):
        found.append(f"{where}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: allowPrivilegeEscalation is not false")
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        found.append(f"{where}: runAsNonRoot is not true")
    if not ((sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")):
        found.append(f"{where}: no seccompProfile")
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{where}: capabilities do not drop ALL")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{where}: capabilities add {sorted(capabilities['add'])}")
    if sc.get("procMount") not in (None, "Default"):
        found.append(f"{where}: procMount is {sc.get('procMount')}")
    if sc.get("windowsOptions", {}).get("hostProcess"):
        found.append(f"{where}: windowsOptions.hostProcess is set")
    if any(port.get("hostPort") for port in c.get("ports") or []):
        found.append(f"{where}: hostPort is set")
    if sc.get("readOnlyRootFilesystem") is not True:  # ours
        found.append(f"{where}: readOnlyRootFilesystem is not true")
    return found


def _ours(pod: Mapping[str, Any]) -> list[str]:
    """Not in the profile, but in every node's pod: no API credentials, no service
    variables, no sharing processes between containers."""
    found = []
    if pod.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken is not false")
    if pod.get("enableServiceLinks") is not False:
        found.append("enableServiceLinks is not false")
    if pod.get("shareProcessNamespace"):
        found.append("shareProcessNamespace is set")
    return found
