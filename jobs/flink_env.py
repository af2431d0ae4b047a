"""Create a PyFlink TableEnvironment configured the project's way (UTC, jars, logs)."""

from __future__ import annotations

import logging
import os
import sys
import time

from infra.jars import pipeline_jars
from infra.settings import Settings

log = logging.getLogger(__name__)


def table_env(settings: Settings, job_name: str, *, config: dict[str, str] | None = None):
    """A streaming TableEnvironment. Local MiniCluster unless run under ``flink run``."""
    log_dir = settings.logs_dir / "flink"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))  # else logs go to site-packages
    t0 = time.monotonic()
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    base = {
        "table.local-time-zone": "UTC",
        "pipeline.name": job_name,
        "pipeline.jars": pipeline_jars(settings.jars_dir),
        "parallelism.default": str(settings.parallelism),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
    }
    for k, v in (base | (config or {})).items():
        conf.set(k, v)
    log.info("TableEnvironment ready in %.1fs (JVM start)", time.monotonic() - t0)
    return t_env
