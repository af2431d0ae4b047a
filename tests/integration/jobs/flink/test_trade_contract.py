"""One trade contract, two implementations: the adversarial corpus through both.

Every payload of ``tests/data/trades_corpus.jsonl`` (written by hand per case by
``tests/data/make_trades_corpus.py``) goes through the Python validator that ingestion uses
and, as raw bytes on a real broker, through the real candles job. Both must give the
verdict the corpus states, case by case: the same reason, or accepted.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest

from infra.connectors import Endpoints
from infra.kafka import OffsetTracker, make_producer, read_all, send_tracked
from infra.settings import REPO_ROOT
from jobs.flink import candles
from jobs.ingest.schema import InvalidTrade, validate
from tests.conftest import make_settings
from udfs.trade_contract import REASONS

pytestmark = pytest.mark.integration
CORPUS = REPO_ROOT / "tests" / "data" / "trades_corpus.jsonl"


def load_corpus() -> list[dict[str, Any]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "payload_b64" in r:
            r["raw"] = base64.b64decode(r["payload_b64"])
        else:
            r["raw"] = None if r["payload"] is None else r["payload"].encode("utf-8")
        rows.append(r)
    return rows


CASES = load_corpus()


def python_verdict(raw: bytes | None) -> str:
    try:
        validate(raw)
    except InvalidTrade as e:
        return e.reason
    return "ok"


def test_corpus_is_adversarial_enough() -> None:
    assert len(CASES) >= 300
    expects = Counter(r["expect"] for r in CASES)
    # every reason the contract can give is exercised, and so is acceptance
    assert set(expects) == set(REASONS) | {"ok"}, set(REASONS) ^ set(expects)
    assert expects["ok"] >= 60


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{r['case']}" for i, r in enumerate(CASES)])
def test_python_validator_verdict(case: dict[str, Any]) -> None:
    assert python_verdict(case["raw"]) == case["expect"]


def test_candles_job_gives_the_same_verdicts(broker, state_dir) -> None:
    s = make_settings(broker, state_dir)
    producer = make_producer(s.kafka_bootstrap, value_serializer=lambda v: v)
    tracker = OffsetTracker(s.topic_trades)
    for case in CASES:
        send_tracked(producer, tracker, case["raw"], key="corpus")  # a key: tombstones need one
    producer.flush()
    producer.close()
    assert not tracker.errors and tracker.acked == len(CASES)
    assert tracker.end == {0: len(CASES)}  # one partition: offset i is case i

    candles.submit(Endpoints(s, end_offsets=tracker.end)).wait()
    dlq = read_all(s.kafka_bootstrap, s.topic_trades_dlq, idle_timeout_s=3)
    late = read_all(s.kafka_bootstrap, s.topic_trades_late, idle_timeout_s=2)
    out = read_all(s.kafka_bootstrap, s.topic_candles, idle_timeout_s=2)

    got = {r["source_offset"]: r["reason"] for r in dlq}
    assert len(got) == len(dlq), "a payload was dead-lettered twice"
    want = {i: r["expect"] for i, r in enumerate(CASES) if r["expect"] != "ok"}
    wrong = {
        f"{i}:{CASES[i]['case']}": (want.get(i, "ok"), got.get(i, "ok"))
        for i in set(got) | set(want)
        if got.get(i) != want.get(i)
    }
    assert wrong == {}, f"(expected, job) per case: {wrong}"
    # the dead letter carries the payload as it was sent (replacement characters aside)
    for r in dlq:
        raw = CASES[r["source_offset"]]["raw"]
        assert r["payload"] == (None if raw is None else raw.decode("utf-8", "replace"))
    # every accepted payload is counted once: in a 1m candle, or as a late trade
    n_ok = sum(r["expect"] == "ok" for r in CASES)
    counted = sum(c["trade_count"] for c in out if c["timeframe"] == "1m")
    assert counted + len(late) == n_ok
