"""Stopping a launched service with everything it started (``bentoml serve`` and the like).

``bentoml serve`` runs an arbiter that forks worker processes; after a ``kill -9`` of the
arbiter's process group a worker can survive, still holding the listening socket, so the
next ``bentoml serve`` on that port fails with "Address already in use". :func:`stop_tree`
records the whole process tree first, signals the group, then kills whatever of the tree is
still alive, so a launcher never leaves an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess

import psutil

log = logging.getLogger(__name__)


def stop_tree(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> list[int]:
    """SIGTERM ``proc``'s process group (it was started with ``start_new_session=True``),
    wait up to ``timeout_s``, then SIGKILL the group and every process of its tree that
    is left, wherever it moved; returns the pids that had to be killed."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    killed = []
    if alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
                killed.append(p.pid)
        psutil.wait_procs(alive, timeout=5)
        log.warning("killed %d process(es) left after SIGTERM: %s", len(killed), killed)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return killed
