"""What every benchmark report records about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def machine_info(**extra: Any) -> dict[str, Any]:
    """Cores, Python, platform, RAM, the current 1/5/15-minute load averages, plus ``extra``."""
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        **extra,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark report as indented JSON (bench/results/*.json) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
