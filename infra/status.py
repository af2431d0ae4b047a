"""What `candleflow status` shows: services, topics, consumer-group lag, Flink jobs, freshness.

Every section is collected on its own and never raises: a service that is down or
unreachable gives ``{"state": "not running" | "unreachable", "detail": ...}`` instead of
data, quickly (port probes first, short timeouts). :func:`collect` returns plain JSON
values (``candleflow status --json`` prints them as they are).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from infra.settings import Settings

TIMEOUT_S = 3.0


def _err(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}"


def _ms_iso(ms: int | float | None) -> str | None:
    if not ms or ms <= 0:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ services
def services(s: Settings) -> dict[str, str]:
    from infra.flink_cluster import FlinkCluster
    from infra.local import clickhouse_service, local_stack

    out: dict[str, str] = {}
    for svc in [*local_stack(s), clickhouse_service(s)]:
        try:
            out[svc.name] = svc.status()
        except Exception as e:  # pragma: no cover - status() only probes
            out[svc.name] = f"unknown ({_err(e)})"
    try:
        out["flink"] = FlinkCluster(s).status()
    except Exception as e:  # pragma: no cover
        out["flink"] = f"unknown ({_err(e)})"
    return out


# ------------------------------------------------------------------------------- kafka
def _broker_up(s: Settings) -> str | None:
    """None if the broker port answers, else why not."""
    from infra.local import port_open

    try:
        if port_open(s.kafka_host, s.kafka_port, timeout=1.0):
            return None
    except OSError as e:
        return f"unreachable ({_err(e)})"
    return f"not running (nothing on {s.kafka_bootstrap})"


def group_ids(s: Settings) -> dict[str, str]:
    """Consumer groups of the project: every ``*group_id`` setting (+ the features job's)."""
    out: dict[str, str] = {}
    for name in type(s).model_fields:
        if name.endswith("group_id"):
            value = getattr(s, name)
            if isinstance(value, str) and value:
                out[name] = value
    if "group_id" in out:  # jobs/flink/features.py: the candles job's group + "-features"
        out["group_id (features job)"] = out["group_id"] + "-features"
    return out


def kafka(s: Settings) -> dict[str, Any]:
    """Topics (partitions, end offsets) and the project groups' committed offsets and lag.

    End offsets come from ListOffsets; on Tansu that is the base offset of the last batch
    + 1, so end offsets and lag are approximate there (``approx: true``)."""
    down = _broker_up(s)
    if down:
        return {"state": down, "bootstrap": s.kafka_bootstrap}
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap, "socket.timeout.ms": 3000})
        md = admin.list_topics(timeout=TIMEOUT_S)
        consumer = Consumer(
            {
                "bootstrap.servers": s.kafka_bootstrap,
                "group.id": "candleflow-status",
                "enable.auto.commit": False,
            }
        )
    except Exception as e:
        return {"state": f"unreachable ({_err(e)})", "bootstrap": s.kafka_bootstrap}
    topics: dict[str, dict[str, Any]] = {}
    tps: list[Any] = []
    try:
        for name in sorted(md.topics):
            if name.startswith("__"):
                continue
            t = md.topics[name]
            ends: dict[str, int | None] = {}
            for p in sorted(t.partitions):
                try:
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(name, p), timeout=TIMEOUT_S, cached=False
                    )
                    ends[str(p)] = int(high)
                except Exception:
                    ends[str(p)] = None
                tps.append(TopicPartition(name, p))
            topics[name] = {"partitions": len(t.partitions), "end_offsets": ends}
        groups: dict[str, Any] = {}
        for setting, gid in group_ids(s).items():
            groups[gid] = _group(s, gid, setting, tps, topics)
    finally:
        consumer.close()
    return {
        "state": "running",
        "bootstrap": s.kafka_bootstrap,
        "approx": True,
        "note": "end offsets from ListOffsets (Tansu: base offset of the last batch + 1)",
        "topics": topics,
        "groups": groups,
    }


def _group(
    s: Settings, gid: str, setting: str, tps: list[Any], topics: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    from confluent_kafka import Consumer

    out: dict[str, Any] = {"setting": setting}
    if not tps:
        return out | {"committed": {}, "lag": 0}
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": gid})
    try:
        committed = c.committed(tps, timeout=TIMEOUT_S)
    except Exception as e:
        return out | {"state": f"unreachable ({_err(e)})"}
    finally:
        c.close()
    per: dict[str, dict[str, Any]] = {}
    total = 0
    for tp in committed:
        if tp.offset is None or tp.offset < 0:
            continue
        end = topics.get(tp.topic, {}).get("end_offsets", {}).get(str(tp.partition))
        lag = max(end - tp.offset, 0) if end is not None else None
        total += lag or 0
        per[f"{tp.topic}[{tp.partition}]"] = {"committed": tp.offset, "end": end, "lag": lag}
    if not per:
        return out | {"state": "no committed offsets", "committed": {}, "lag": None}
    return out | {"state": "ok", "committed": per, "lag": total}


# ------------------------------------------------------------------------------- flink
def flink(s: Settings) -> dict[str, Any]:
    """Jobs of the standalone cluster (REST API): name, state, start, last checkpoint."""
    from infra.flink_cluster import FlinkCluster

    fc = FlinkCluster(s)
    ov = fc.overview()
    if ov is None:
        return {
            "state": f"not running (no REST at {fc.rest_url})",
            "note": "jobs run with --target local (MiniCluster) are not visible here",
        }
    jobs: list[dict[str, Any]] = []
    try:
        listing = fc.rest("/jobs/overview", timeout=TIMEOUT_S).get("jobs", [])
    except Exception as e:
        return {"state": f"unreachable ({_err(e)})", "rest": fc.rest_url}
    for j in sorted(listing, key=lambda j: -int(j.get("start-time", 0))):
        job: dict[str, Any] = {
            "id": j.get("jid"),
            "name": j.get("name"),
            "state": j.get("state"),
            "start_time": _ms_iso(j.get("start-time")),
            "duration_s": round(int(j.get("duration", 0)) / 1000, 1),
            "last_checkpoint": None,
        }
        try:
            cp = fc.rest(f"/jobs/{j['jid']}/checkpoints", timeout=TIMEOUT_S)
            done = (cp.get("latest") or {}).get("completed")
            if done:
                job["last_checkpoint"] = {
                    "id": done.get("id"),
                    "at": _ms_iso(done.get("latest_ack_timestamp")),
                    "duration_ms": done.get("end_to_end_duration"),
                    "path": done.get("external_path"),
                }
            job["checkpoints"] = (cp.get("counts") or {}).get("completed", 0)
        except Exception:  # checkpointing off, or the job is gone
            job["checkpoints"] = None
        jobs.append(job)
    return {
        "state": "running",
        "rest": fc.rest_url,
        "taskmanagers": ov.get("taskmanagers"),
        "slots": f"{ov.get('slots-available')}/{ov.get('slots-total')} free",
        "jobs": jobs,
    }


# --------------------------------------------------------------------------- freshness
FRESHNESS_SQL = """
SELECT stage, timeframe, count() AS n, max(window_end_ms) AS last_window_end_ms,
       max(observed_at_ms) AS last_observed_ms,
       quantile(0.5)(lag_ms) AS p50_ms, quantile(0.99)(lag_ms) AS p99_ms, max(lag_ms) AS max_ms
FROM pipeline_freshness
WHERE observed_at_ms >= {since}
GROUP BY stage, timeframe
ORDER BY stage, timeframe
"""
LAST_SQL = """
SELECT stage, max(window_end_ms) AS last_window_end_ms, max(observed_at_ms) AS last_observed_ms
FROM pipeline_freshness GROUP BY stage ORDER BY stage
"""


def freshness(s: Settings, minutes: float = 15.0) -> dict[str, Any]:
    """Per stage (and timeframe): last window end ever seen, and count / p50 / p99 / max of
    ``lag_ms`` over the last ``minutes`` of observations (``pipeline_freshness``)."""
    from infra.clickhouse import connect
    from infra.settings import mask_url

    parts = urlsplit(s.clickhouse_url)
    url = mask_url(s.clickhouse_url)
    if parts.scheme == "chdb":
        from pathlib import Path

        path = parts.netloc + parts.path
        if path != ":memory:" and not Path(path).exists():
            return {"state": f"no data (no chDB at {path})", "url": url}
    elif parts.scheme in ("clickhouse", "tcp"):
        from infra.local import port_open

        host, port = parts.hostname or "127.0.0.1", parts.port or 9000
        if not port_open(host, port, timeout=1.0):
            return {"state": f"not running (nothing on {host}:{port})", "url": url}
    try:
        store = connect(s.clickhouse_url)
    except Exception as e:
        return {"state": f"unreachable ({_err(e)})", "url": url}
    try:
        if "pipeline_freshness" not in _tables(store):
            return {
                "state": "no pipeline_freshness table (run `candleflow clickhouse migrate`)",
                "url": url,
            }
        since = int(time.time() * 1000 - minutes * 60_000)
        recent = store.query(FRESHNESS_SQL.format(since=since))
        last = store.query(LAST_SQL)
    except Exception as e:
        return {"state": f"query failed ({_err(e)})", "url": url}
    finally:
        store.close()
    stages: dict[str, Any] = {}
    for r in last:
        stages[str(r["stage"])] = {
            "last_window_end": _ms_iso(r["last_window_end_ms"]),
            "last_window_end_ms": int(r["last_window_end_ms"]),
            "last_observed": _ms_iso(r["last_observed_ms"]),
            "recent": {},
        }
    for r in recent:
        st = stages.setdefault(str(r["stage"]), {"recent": {}})
        st["recent"][str(r["timeframe"])] = {
            "n": int(r["n"]),
            "p50_ms": round(float(r["p50_ms"]), 1),
            "p99_ms": round(float(r["p99_ms"]), 1),
            "max_ms": int(r["max_ms"]),
            "last_window_end": _ms_iso(r["last_window_end_ms"]),
        }
    out: dict[str, Any] = {"state": "ok", "url": url, "window_minutes": minutes, "stages": stages}
    note = historical_note(stages, time.time() * 1000)
    if note:
        out["note"] = note
    return out


HISTORICAL_AFTER_MS = 86_400_000  # newest bar older than this: the data is a replay


def historical_note(stages: dict[str, Any], now_ms: float) -> str | None:
    """A note when the newest window of every stage ended more than a day ago: the lags are
    then the age of replayed bars (e.g. the demo's 2021 data), not a live feed's delay."""
    ends = [int(st["last_window_end_ms"]) for st in stages.values() if "last_window_end_ms" in st]
    if not ends or now_ms - max(ends) <= HISTORICAL_AFTER_MS:
        return None
    days = (now_ms - max(ends)) / 86_400_000
    return (
        f"historical data: the newest window ended {_ms_iso(max(ends))}, {days:,.0f} days ago; "
        "the lags are the age of replayed bars, not the delay of a live feed"
    )


def _tables(store: Any) -> set[str]:
    return {str(r["name"]) for r in store.query("SHOW TABLES")}


# ------------------------------------------------------------------------------- all
def collect(s: Settings, minutes: float = 15.0) -> dict[str, Any]:
    out: dict[str, Any] = {"at": _ms_iso(time.time() * 1000)}
    for name, fn in (
        ("services", lambda: services(s)),
        ("kafka", lambda: kafka(s)),
        ("flink", lambda: flink(s)),
        ("freshness", lambda: freshness(s, minutes)),
    ):
        try:
            out[name] = fn()
        except Exception as e:  # a section must never take the others down
            out[name] = {"state": f"error ({_err(e)})"}
    return out


# ---------------------------------------------------------------------------- render
def render(r: dict[str, Any], out: Any) -> None:
    """:func:`collect`'s report as rich tables on ``out`` (a rich Console)."""
    from rich.table import Table

    t = Table("service", "status", title="services")
    for name, st in r["services"].items():
        t.add_row(name, str(st))
    out.print(t)

    k = r["kafka"]
    if "topics" not in k:
        out.print(f"[bold]kafka[/bold] {k.get('bootstrap', '')}: {k['state']}")
    else:
        t = Table("topic", "partitions", "end offsets (approx)", title=f"topics ({k['bootstrap']})")
        for name, tp in k["topics"].items():
            ends = ", ".join(f"{p}:{'?' if o is None else o}" for p, o in tp["end_offsets"].items())
            t.add_row(name, str(tp["partitions"]), ends)
        out.print(t)
        t = Table("group", "setting", "state", "lag (approx)", "committed", title="consumer groups")
        for gid, g in k["groups"].items():
            done = g.get("committed") or {}
            lag = g.get("lag")
            t.add_row(
                gid,
                g["setting"],
                g.get("state", "ok"),
                "-" if lag is None else f"{lag:,}",
                ", ".join(f"{tp}={c['committed']}" for tp, c in done.items()) or "-",
            )
        out.print(t)

    f = r["flink"]
    if "jobs" not in f:
        out.print(f"[bold]flink jobs[/bold]: {f['state']}")
    else:
        t = Table("job", "state", "started", "last checkpoint", title=f"flink jobs ({f['rest']})")
        for j in f["jobs"]:
            cp = j.get("last_checkpoint")
            t.add_row(
                str(j["name"]),
                str(j["state"]),
                j["start_time"] or "-",
                f"#{cp['id']} at {cp['at']}" if cp else "none",
            )
        if not f["jobs"]:
            t.add_row("(no jobs)", "", "", "")
        out.print(t)

    fr = r["freshness"]
    if "stages" not in fr:
        out.print(f"[bold]freshness[/bold]: {fr['state']}")
        return
    t = Table(
        "stage",
        "last window end",
        "timeframe",
        f"n (last {fr['window_minutes']:g} min)",
        "p50 lag ms",
        "p99 lag ms",
        "max lag ms",
        title="freshness (pipeline_freshness; lag = observed - (window end + watermark delay))",
    )
    for stage, st in fr["stages"].items():
        recent = st.get("recent") or {}
        if not recent:
            t.add_row(stage, st.get("last_window_end") or "-", "-", "0", "-", "-", "-")
        for tf, q in recent.items():
            t.add_row(
                stage,
                st.get("last_window_end") or "-",
                tf,
                f"{q['n']:,}",
                f"{q['p50_ms']:,.0f}",
                f"{q['p99_ms']:,.0f}",
                f"{q['max_ms']:,}",
            )
    if not fr["stages"]:
        t.add_row("(no rows yet)", "", "", "", "", "", "")
    out.print(t)
    if fr.get("note"):
        out.print(f"[yellow]note[/yellow]: {fr['note']}", soft_wrap=True)
