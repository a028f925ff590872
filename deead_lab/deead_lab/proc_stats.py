"""What /proc says about a process: resident memory and CPU time (Linux), for the benchmarks and the
simulator supervisors (a hung renderer spins; a starved worker does not)."""
from __future__ import annotations

import os
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident set size of pid in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid so far, s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
