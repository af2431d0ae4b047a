"""The strategy operator's timer logic (udfs/flink_strategy.StrategyFunction) on the real
candles, with in-memory stand-ins for the keyed state and the timer service.

The reference is :class:`udfs.strategy.StrategyEngine` stepped over the same bar groups
directly. The cases: timers fire in order (the plain run), timers lost at a restore (PyFlink
2.0 can drop timers that fire inside ``prepareSnapshotPreBarrier``, see the module doc) and
an input that ends with bars whose timers were lost. The real operator on a real cluster,
SIGKILLed mid-run, is tests/integration/jobs/flink/test_strategy_recovery.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.udfs.test_strategy import REAL_CONFIGS, bar_groups, real_bar_frame
from udfs.flink_strategy import (
    END_OF_TIME,
    EQUITY_TAG,
    FILLS_TAG,
    StrategyFunction,
    output_columns,
    to_row,
)
from udfs.strategy import BarInput, StrategyEngine

# kill-switch, stop-loss, max-hold and signal exits all fire on these bars
CONFIG = REAL_CONFIGS["killswitch"]


class MapStateStub:
    def __init__(self) -> None:
        self.d: dict[int, Any] = {}

    def get(self, k: int) -> Any:
        return self.d.get(k)

    def put(self, k: int, v: Any) -> None:
        self.d[k] = v

    def remove(self, k: int) -> None:
        self.d.pop(k, None)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.d))


class ValueStateStub:
    def __init__(self) -> None:
        self.v: Any = None

    def value(self) -> Any:
        return self.v

    def update(self, v: Any) -> None:
        self.v = v


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> None:
        self.n += 1


class Runtime:
    """Keyed state, metrics and an event-time timer queue (a set, as Flink's per key)."""

    def __init__(self) -> None:
        self.map_state = MapStateStub()
        self.value_state = ValueStateStub()
        self.counters: dict[str, Counter] = {}
        self.timers: set[int] = set()
        self.watermark = -(2**63)

    # RuntimeContext
    def get_map_state(self, _descriptor: Any) -> MapStateStub:
        return self.map_state

    def get_state(self, _descriptor: Any) -> ValueStateStub:
        return self.value_state

    def get_metrics_group(self) -> Any:
        return SimpleNamespace(counter=lambda n: self.counters.setdefault(n, Counter()))

    # Context.timer_service()
    def timer_service(self) -> Any:
        return SimpleNamespace(
            register_event_time_timer=self.timers.add,
            current_watermark=lambda: self.watermark,
        )


@pytest.fixture(scope="module")
def groups() -> list[tuple[int, list[BarInput]]]:
    """test_strategy's real bars (5 symbols, missing bars, seeded predictions, some
    degraded) as groups, each in a shuffled order."""
    return bar_groups(real_bar_frame())


@pytest.fixture(scope="module")
def want(groups: list[tuple[int, list[BarInput]]]) -> list[Any]:
    """The engine stepped over every group, as the operator's output rows."""
    eng = StrategyEngine(CONFIG)
    cols = {k: output_columns(k) for k in ("orders", "fills", "equity")}
    out: list[Any] = []
    for t, rows in groups:
        res = eng.step(t, rows)
        out += [(FILLS_TAG, to_row(f, cols["fills"], "unit", "1m")) for f in res.fills]
        out += [to_row(o, cols["orders"], "unit", "1m") for o in res.orders]
        out.append((EQUITY_TAG, to_row(res.equity, cols["equity"], "unit", "1m")))
    return out


def operator(rt: Runtime) -> StrategyFunction:
    fn = StrategyFunction(CONFIG.model_dump_json(), "unit", "1m")
    fn.open(rt)  # type: ignore[arg-type]
    return fn


def feed(fn: StrategyFunction, rt: Runtime, rows: list[BarInput]) -> None:
    ctx: Any = rt
    for r in rows:
        value = SimpleNamespace(**dataclasses.asdict(r))
        assert list(fn.process_element(value, ctx)) == []  # type: ignore[arg-type]


def advance(fn: StrategyFunction, rt: Runtime, watermark: int) -> list[Any]:
    """Fire the due timers in time order, as Flink's timer service does."""
    rt.watermark = watermark
    out: list[Any] = []
    for ts in sorted(x for x in rt.timers if x <= watermark):
        rt.timers.discard(ts)
        out += list(fn.on_timer(ts, rt))  # type: ignore[arg-type]
    return out


def test_timers_in_order_equal_the_engine(
    groups: list[tuple[int, list[BarInput]]], want: list[Any]
) -> None:
    rt = Runtime()
    fn = operator(rt)
    out: list[Any] = []
    for t, rows in groups:
        feed(fn, rt, rows)
        out += advance(fn, rt, t - 1)  # this bar's rows read: the previous bar is complete
    out += advance(fn, rt, END_OF_TIME)
    assert len([o for o in want if not isinstance(o, tuple)]) >= 10  # it trades
    assert out == want
    assert rt.counters["strategy_catch_up_bars"].n == 0
    assert not rt.map_state.d and not rt.timers


def test_lost_timers_are_caught_up_by_the_next_timer(
    groups: list[tuple[int, list[BarInput]]], want: list[Any]
) -> None:
    """A restore whose checkpoint holds rows of 40 bars but not their timers: the next bar's
    timer steps them first, in order, and the result equals the uninterrupted run."""
    rt = Runtime()
    fn = operator(rt)
    out: list[Any] = []
    lost = {t for t, _ in groups[100:140]}
    for t, rows in groups:
        feed(fn, rt, rows)
        if t == max(lost):
            # "restore": the lost bars' timers are gone, the Python object is new
            rt.timers -= lost
            fn = operator(rt)
        if t - 60_000 not in lost:
            out += advance(fn, rt, t - 1)
    out += advance(fn, rt, END_OF_TIME)
    assert out == want
    assert rt.counters["strategy_catch_up_bars"].n == len(lost)


def test_bars_left_at_the_end_are_stepped_by_the_end_of_time_timer(
    groups: list[tuple[int, list[BarInput]]], want: list[Any]
) -> None:
    rt = Runtime()
    fn = operator(rt)
    out: list[Any] = []
    for _, rows in groups:
        feed(fn, rt, rows)
    rt.timers = {END_OF_TIME}  # every bar timer lost; the end-of-time timer was restored
    out += advance(fn, rt, END_OF_TIME)
    assert out == want
    assert rt.counters["strategy_catch_up_bars"].n == len(groups)
    assert not rt.map_state.d
