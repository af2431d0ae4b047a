"""``candleflow ingest replay`` end to end on the real broker: the bad-input files of
tests/data/replay/ (every row's verdict from ``tests/replay_cases.py``), 5,000 real rows then
a row without ts_ms, typed parquet, truncated gzip, whole-file errors (exit 2), Ctrl-C
(exit 130) and a broker that dies mid-replay (exit 1) - each run ends with the counts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from infra.kafka import read_all
from infra.local import TansuBroker, free_port
from infra.settings import SHARED_DATA, Settings, get_settings
from jobs.ingest.replay import DETECTED_BY, TRUNCATED
from jobs.ingest.schema import InvalidTrade, format_decimal, validate
from tests import replay_cases as rc
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
CANDLEFLOW = Path(sys.executable).parent / "candleflow"
CASE_FILES = {
    "bad_trades.csv": (rc.CSV_CASES, 2),
    "bad_trades.csv.gz": (rc.CSVGZ_CASES, 2),
    "bad_trades.jsonl": (rc.JSONL_CASES, 1),
    "bad_trades.jsonl.gz": (rc.JSONLGZ_CASES, 1),
}


def env_for(s: Settings) -> dict[str, str]:
    return {
        "CANDLEFLOW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CANDLEFLOW_TOPIC_TRADES": s.topic_trades,
        "CANDLEFLOW_TOPIC_TRADES_DLQ": s.topic_trades_dlq,
    }


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Runs `candleflow ingest replay ARGS` in-process against this test's topics."""
    from jobs.cli import app

    for k, v in env_for(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()

    def run(*args: str):
        return CliRunner().invoke(app, ["ingest", "replay", *args])

    yield run
    get_settings.cache_clear()


def topics(s: Settings, trades: int, dead: int) -> tuple[list[dict], list[dict]]:
    got = read_all(s.kafka_bootstrap, s.topic_trades, expected=trades, idle_timeout_s=2)
    dlq = read_all(s.kafka_bootstrap, s.topic_trades_dlq, expected=dead, idle_timeout_s=2)
    return got, dlq


def assert_summary(
    out: str, name: str, read: int, sent: int, dead: dict[str, tuple[int, int]], s: Settings
) -> None:
    """The printed counts: dead = {reason: (count, first line)}."""
    assert f"replay {name}: complete" in out, out
    assert f"  read {read:,} rows" in out, out
    assert f"  sent {sent:,} -> {s.topic_trades}, acknowledged {sent:,} " in out, out
    n = sum(c for c, _ in dead.values())
    assert f"  dead-lettered {n:,} -> {s.topic_trades_dlq}, acknowledged {n:,}" in out, out
    for reason, (count, first) in dead.items():
        assert f"    {count:,} x {reason!r} (first at line {first})" in out, out
    assert len(re.findall(r"^    [\d,]+ x ", out, re.M)) == len(dead), out


def expected_dead(rows: list[tuple[int, str]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line, reason in rows:
        n, first = out.get(reason, (0, line))
        out[reason] = (n + 1, first)
    return out


@pytest.mark.parametrize("name", sorted(CASE_FILES))
def test_bad_rows_dead_lettered_with_reason_and_line(name, cli, settings) -> None:
    cases, first = CASE_FILES[name]
    numbered = [(line, c) for line, c in rc.numbered(cases, first) if not c.blank]
    good = [c.good for _, c in numbered if c.good is not None]
    bad = [(line, rc.expected_reason(c), rc.payload(c.raw)) for line, c in numbered if c.bad]
    res = cli(str(rc.DATA / name))
    assert res.exit_code == 0, res.output
    got, dlq = topics(settings, len(good), len(bad))
    assert got == good  # in file order, price/qty texts exactly as written
    assert [(d["source_offset"], d["reason"], d["payload"]) for d in dlq] == bad
    assert {(d["source_topic"], d["source_partition"], d["detected_by"]) for d in dlq} == {
        (f"file:{name}", None, DETECTED_BY)
    }
    assert_summary(
        res.output,
        name,
        len(numbered),
        len(good),
        expected_dead([(line, r) for line, r, _ in bad]),
        settings,
    )
    assert f"({sum(c.blank for c in cases)} blank line(s) skipped)" in res.output


def real_rows(n: int) -> pd.DataFrame:
    df = pd.read_parquet(SHARED_DATA / "binance_trades_sample.parquet").head(n)
    df["price"] = df["price"].map(format_decimal)
    df["qty"] = df["qty"].map(format_decimal)
    return df.astype(str)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_missing_ts_after_5000_good_rows(fmt, cli, settings, tmp_path) -> None:
    """The issue's case: row 5,001 has no ts_ms; before, 4,906 trades + 94 dead letters went
    out and the replay crashed without a summary."""
    df = real_rows(5_010)
    rows = df.to_dict("records")
    bad = dict(rows[5_000], ts_ms="")
    path = tmp_path / f"big.{fmt}"
    if fmt == "csv":
        lines = [",".join(df.columns)] + [",".join(r.values()) for r in rows[:5_000]]
        lines += [",".join(bad.values())] + [",".join(r.values()) for r in rows[5_001:]]
        bad_line, payload = 5_002, lines[5_001]
    else:
        del bad["ts_ms"]
        lines = [json.dumps(r) for r in rows[:5_000]] + [json.dumps(bad)]
        lines += [json.dumps(r) for r in rows[5_001:]]
        bad_line, payload = 5_001, lines[5_000]
    path.write_text("\n".join(lines) + "\n")
    good = [r for i, r in enumerate(rows) if i != 5_000]
    verdicts = []  # the validator's verdict on each real row (all valid today)
    for r in good:
        try:
            verdicts.append(validate({**r, "exchange": "binance"}).to_json())
        except InvalidTrade as e:
            verdicts.append(e.reason)
    sent = [v for v in verdicts if isinstance(v, dict)]
    res = cli(str(path))
    assert res.exit_code == 0, res.output
    got, dlq = topics(settings, len(sent), len(good) - len(sent) + 1)
    assert [(t["price"], t["qty"]) for t in got] == [(v["price"], v["qty"]) for v in sent]
    assert got == sent and len(got) == 5_009
    assert [(d["source_offset"], d["reason"], d["payload"]) for d in dlq] == [
        (bad_line, "missing field ts_ms", payload)
    ]
    assert_summary(
        res.output, path.name, 5_010, 5_009, {"missing field ts_ms": (1, bad_line)}, settings
    )


@pytest.mark.parametrize("name", ["truncated.csv.gz", "truncated.jsonl.gz"])
def test_truncated_gzip(name, cli, settings) -> None:
    *complete, fragment = rc.recoverable((rc.DATA / name).read_bytes()).split(b"\n")
    header = name.endswith(".csv.gz")
    n_good = len(complete) - header
    res = cli(str(rc.DATA / name))
    assert res.exit_code == 0, res.output
    got, dlq = topics(settings, n_good, 1)
    assert len(got) == n_good
    assert [(d["source_offset"], d["reason"], d["payload"]) for d in dlq] == [
        (len(complete) + 1, TRUNCATED, fragment.decode())
    ]
    assert_summary(
        res.output, name, n_good + 1, n_good, {TRUNCATED: (1, len(complete) + 1)}, settings
    )
    assert "stopped reading at line/row" in res.output and "EOFError" in res.output


def test_unusable_files_exit_2_and_send_nothing(cli, settings, tmp_path) -> None:
    res = cli(str(rc.DATA / "missing_columns.csv"))
    assert res.exit_code == 2, res.output
    assert "lacks required columns ['qty', 'trade_id']" in res.output
    res = cli(str(rc.DATA / "not_gzip.jsonl.gz"))
    assert res.exit_code == 2 and "Not a gzipped file" in res.output, res.output
    res = cli(str(rc.DATA / "bad_trades.csv"), "--speed", "0")
    assert res.exit_code == 2 and "--speed" in res.output, res.output
    res = cli(str(tmp_path / "nope.csv"))
    assert res.exit_code == 2  # typer: file does not exist
    got, dlq = topics(settings, 0, 0)
    assert got == [] and dlq == []


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl.gz", "blank_only.jsonl"])
def test_empty_files(name, cli, settings) -> None:
    res = cli(str(rc.DATA / name))
    assert res.exit_code == 0, res.output
    assert_summary(res.output, name, 0, 0, {}, settings)


def test_typed_parquet_integer_columns_not_truncated(cli, settings, tmp_path) -> None:
    path = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table(
            {
                "ts_ms": pa.array([1680652700452.0, 1721347022707.5, None, 1680652700452.0]),
                "symbol": ["BTCUSDT.UM"] * 4,
                "price": [28145.1, 28145.1, 28145.1, 28145.1],
                "qty": [0.002, 0.02, 0.02, 0.008],
                "side": ["sell"] * 4,
                "trade_id": pa.array([3535186032.0, 3535186033.0, 3535186034.0, 1.5]),
            }
        ),
        path,
    )
    res = cli(str(path))
    assert res.exit_code == 0, res.output
    got, dlq = topics(settings, 1, 3)
    want = rc.wire("1680652700452", "BTCUSDT.UM", "28145.1", "0.002", "sell", "3535186032")
    assert got == [want]
    assert [(d["source_offset"], d["reason"]) for d in dlq] == [
        (2, "ts_ms is not an integer"),
        (3, "missing field ts_ms"),
        (4, "trade_id is not a non-negative integer"),
    ]
    assert "(first at row 2)" in res.output


def test_repeat_shifts_passes_and_dead_letters_each_pass(cli, settings) -> None:
    name = "bad_trades.csv.gz"
    numbered = [(ln, c) for ln, c in rc.numbered(rc.CSVGZ_CASES, 2) if not c.blank]
    good = [c.good for _, c in numbered if c.good]
    n_bad = sum(c.bad for _, c in numbered)
    res = cli(str(rc.DATA / name), "--repeat", "2")
    assert res.exit_code == 0, res.output
    got, dlq = topics(settings, 2 * len(good), 2 * n_bad)
    hour = 3_600_000
    span = max(g["ts_ms"] for g in good) - min(g["ts_ms"] for g in good)
    shift_ms, id_shift = (span // hour + 2) * hour, max(g["trade_id"] for g in good) + 1
    assert got == good + [
        {**g, "ts_ms": g["ts_ms"] + shift_ms, "trade_id": g["trade_id"] + id_shift} for g in good
    ]
    assert [d["source_offset"] for d in dlq[:n_bad]] == [d["source_offset"] for d in dlq[n_bad:]]
    assert f"read {2 * len(numbered):,} rows in 2 passes" in res.output


# ------------------------------------------------------------- Ctrl-C and a failing broker
def start_replay(path: Path, s: Settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CANDLEFLOW), "ingest", "replay", str(path), *args],
        env={**os.environ, **env_for(s), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_trades(s: Settings, n: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if len(read_all(s.kafka_bootstrap, s.topic_trades, expected=n, idle_timeout_s=1)) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} trades after {timeout_s} s")


def summary_counts(out: str) -> tuple[int, int, int, int]:
    """(read, sent, acknowledged trades, dead-lettered) from the printed summary."""
    m = re.search(r"read ([\d,]+) rows", out)
    t = re.search(r"sent ([\d,]+) -> \S+, acknowledged ([\d,]+)", out)
    d = re.search(r"dead-lettered ([\d,]+) ->", out)
    assert m and t and d, out

    def num(x: str) -> int:
        return int(x.replace(",", ""))

    return num(m[1]), num(t[1]), num(t[2]), num(d[1])


def test_ctrl_c_ends_with_the_counts(settings, tmp_path) -> None:
    path = tmp_path / "paced.csv"
    real_rows(400).to_csv(path, index=False)
    proc = start_replay(path, settings, "--speed", "1")  # ~8 minutes of trades in real time
    try:
        wait_for_trades(settings, 5, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert f"replay {path.name}: interrupted (Ctrl-C)" in out, out
    read, sent, acked, dead = summary_counts(out)
    assert 5 <= sent == acked < 400 and dead == 0 and read - sent in (0, 1)
    got = read_all(settings.kafka_bootstrap, settings.topic_trades, idle_timeout_s=2)
    assert len(got) == sent


def test_broker_dying_mid_replay_ends_with_the_counts(tmp_path) -> None:
    broker = TansuBroker(port=free_port(), state_dir=tmp_path)
    broker.start()
    try:
        s = make_settings(broker, tmp_path)
        path = tmp_path / "paced.csv"
        real_rows(3_000).to_csv(path, index=False)
        proc = start_replay(path, s, "--speed", "20", "--broker-timeout-s", "3")
        try:
            wait_for_trades(s, 20, proc)
            broker.kill()
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    finally:
        broker.stop()
    assert proc.returncode == 1, out
    assert f"replay {path.name}: broker failed" in out, out
    read, sent, acked, dead = summary_counts(out)
    assert 20 <= acked <= sent <= read < 3_000 and dead == 0
    if acked < sent:
        assert f"NOT delivered: {sent - acked:,}" in out, out


def test_unreachable_broker_exits_1_with_the_counts(tmp_path) -> None:
    env = {"CANDLEFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    res = subprocess.run(
        [str(CANDLEFLOW), "ingest", "replay", str(rc.DATA / "bad_trades.csv")],
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert "replay bad_trades.csv: broker failed" in res.stderr
    assert summary_counts(res.stderr) == (0, 0, 0, 0)
