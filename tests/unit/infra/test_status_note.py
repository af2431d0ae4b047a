"""`candleflow status` says when its freshness figures come from historical data."""

from __future__ import annotations

from infra.status import historical_note

DAY = 86_400_000


def test_no_note_for_a_live_feed() -> None:
    now = 1_800_000_000_000
    stages = {"candle": {"last_window_end_ms": now - 60_000}, "order": {}}
    assert historical_note(stages, now) is None
    assert historical_note({}, now) is None


def test_note_for_replayed_history() -> None:
    now = 1_800_000_000_000
    end = 1_618_963_200_000  # 2021-04-21T00:00:00Z
    note = historical_note({"candle": {"last_window_end_ms": end}}, now)
    assert note is not None
    assert "historical data" in note and "2021-04-21T00:00:00" in note
    assert f"{(now - end) / DAY:,.0f} days ago" in note
    # one stage still live: not historical
    stages = {
        "candle": {"last_window_end_ms": end},
        "order": {"last_window_end_ms": now - DAY // 2},
    }
    assert historical_note(stages, now) is None
