"""OOM kills of a container, seen by the kernel's own count on this host.

Podman (4.3, cgroup v1) reports no `oom` event and leaves `State.OOMKilled` false, so
the exit code 137 of an OOM kill looks like any SIGKILL. Docker misses some under
gVisor: the OOM killer kills the sandbox whole, and the engine's shim, seeing the exit,
can stop listening before the kernel's notice reaches it (measured: 1 in 8 OOM kills of
a runsc container reported with OOMKilled false and no `oom` event). The kernel counts OOM kills per
memory cgroup (`oom_kill` in memory.oom_control) and wakes an eventfd registered through
cgroup.event_control when one happens, or when the cgroup is removed. A watcher per
container, started before the container is, waits for its cgroup to appear, registers,
and reads the count when woken (still there on an OOM: the cgroup is removed only after
the engine has reaped the container). The node cannot forge it: the cgroup files are on
the host, and a node has no capabilities and sees its cgroup read-only at most.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
# Where each engine puts a container's cgroup: cgroupfs manager, then systemd.
PODMAN_CGROUPS = ("libpod_parent/libpod-{id}", "machine.slice/libpod-{id}.scope")
DOCKER_CGROUPS = ("docker/{id}", "system.slice/docker-{id}.scope")
APPEAR_POLL_S = 0.002  # runc creates the cgroup a few ms before the node's process runs
APPEAR_TIMEOUT_S = 120.0
SETTLE_S = 5.0  # an out-of-memory cgroup's kill is counted within milliseconds


def oom_kills(control: str) -> int:
    """The `oom_kill` count in a memory.oom_control text (0 when absent)."""
    for line in control.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


class OomWatch:
    """Watches one container's memory cgroup; `killed` once `done` is set."""

    def __init__(
        self,
        container_id: str,
        root: Path = MEMORY_ROOT,
        timeout_s: float = APPEAR_TIMEOUT_S,
        cgroups: tuple[str, ...] = PODMAN_CGROUPS,
    ) -> None:
        self.killed = False
        self.watching = False  # registered with the kernel (else: not known)
        self.done = threading.Event()
        self._stop = threading.Event()
        self._paths = [root / pattern.format(id=container_id) for pattern in cgroups]
        self._timeout_s = timeout_s
        threading.Thread(target=self._run, daemon=True, name="oomwatch").start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            path = self._appeared()
            if path is not None:
                self._watch(path)
        except OSError:
            pass  # not permitted, or gone already: not known (`watching` says which)
        finally:
            self.done.set()

    def _appeared(self) -> Path | None:
        deadline = time.monotonic() + self._timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            for path in self._paths:
                if path.is_dir():
                    return path
            time.sleep(APPEAR_POLL_S)
        return None

    def _watch(self, path: Path) -> None:
        control = os.open(path / "memory.oom_control", os.O_RDONLY)
        wake = os.eventfd(0)
        try:
            (path / "cgroup.event_control").write_text(f"{wake} {control}")
            self.watching = True
            # A kill before we registered is in the count already.
            if self._count(control) is False:
                os.eventfd_read(wake)  # the cgroup ran out of memory, or was removed
                self._settle(control)
        finally:
            os.close(wake)
            os.close(control)

    def _settle(self, control: int) -> None:
        """The kernel wakes us when the cgroup runs out of memory, before its OOM killer
        has chosen and counted a victim: the count is read again until it shows the kill
        or the cgroup is gone (the engine removes it only after reaping the container)."""
        deadline = time.monotonic() + SETTLE_S
        while self._count(control) is False and time.monotonic() < deadline:
            time.sleep(APPEAR_POLL_S)

    def _count(self, control: int) -> bool | None:
        """Whether the count shows a kill; None once the cgroup is gone."""
        try:
            self.killed = oom_kills(os.pread(control, 4096, 0).decode()) > 0
        except OSError as error:
            if error.errno != errno.ENODEV:
                raise
            return None
        return self.killed
