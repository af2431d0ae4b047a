"""Thin PyFlink wrappers of the strategy job (jobs/flink/strategy.py, sql/flink/strategy.sql).

- :func:`predict_udf`: a vectorized (pandas) scalar UDF. One call = one Arrow batch of
  ``features`` rows = one ``POST /score`` (:class:`udfs.predict_client.PredictClient`); it
  returns a ``ROW`` with the prediction columns of :data:`udfs.predict_client.PREDICTION_COLUMNS`.
- :class:`StrategyFunction`: a ``KeyedProcessFunction`` on a constant key (one account). It
  buffers each bar's rows in ``MapState`` (bar_end_ms -> {symbol: row}), registers an
  event-time timer at the bar end and, when the watermark passes it, runs
  :meth:`udfs.strategy.StrategyEngine.step` on the whole group (symbol order is the engine's,
  so arrival order does not matter). The engine's ``state()`` (JSON) lives in ``ValueState``:
  checkpoints and restarts keep the account. Orders are the main output, fills and equity
  side outputs (:data:`FILLS_TAG`, :data:`EQUITY_TAG`), each row = the engine's dict +
  ``strategy`` + ``timeframe``.

  A timer steps every buffered bar up to its time, oldest first, not only its own, and a
  timer at the end of time (:data:`END_OF_TIME`) catches what is left when a bounded input
  ends. PyFlink 2.0 can lose timers at a checkpoint: a watermark held back during a bundle
  is released inside ``prepareSnapshotPreBarrier`` (the bundle-finished callback), its timers
  leave the timer queue and go to Python in a new bundle that the snapshot does not wait
  for. A restore from that checkpoint has those bars' rows in ``MapState`` and no timers for
  them (measured: 140 bars skipped, the account diverged). Stepping every due bar makes such
  a bar wait for the next timer instead; ``strategy_catch_up_bars`` counts them.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.table import DataTypes
from pyflink.table.udf import ScalarFunction, UserDefinedScalarFunctionWrapper, udf

from udfs.predict_client import PREDICTION_COLUMNS, PredictClient, load_schedule
from udfs.strategy import (
    EQUITY_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    BarInput,
    StrategyConfig,
    StrategyEngine,
)
from udfs.topics import STRATEGY_KEYS, pandas_dtypes

log = logging.getLogger(__name__)

# a timer here fires only on the final watermark (a bounded input's end)
END_OF_TIME = 2**63 - 1
EXTRA_COLUMNS: dict[str, str] = {k: pandas_dtypes("orders")[k] for k in STRATEGY_KEYS}
_TYPEINFO = {
    "object": Types.STRING,
    "int64": Types.LONG,
    "float64": Types.DOUBLE,
    "bool": Types.BOOLEAN,
}
_SQL_TYPE = {"object": "STRING", "int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN"}
_DATATYPE = {
    "object": DataTypes.STRING,
    "int64": DataTypes.BIGINT,
    "float64": DataTypes.DOUBLE,
    "bool": DataTypes.BOOLEAN,
}


def output_columns(kind: str) -> dict[str, str]:
    """Columns (name -> pandas dtype) of the ``orders``/``fills``/``equity`` output rows."""
    base = {"orders": ORDER_COLUMNS, "fills": FILL_COLUMNS, "equity": EQUITY_COLUMNS}[kind]
    return {**base, **EXTRA_COLUMNS}


def sql_columns(columns: dict[str, str]) -> str:
    """``name TYPE`` list for a CREATE TABLE (names backquoted)."""
    return ",\n    ".join(f"`{n}` {_SQL_TYPE[t]}" for n, t in columns.items())


def row_type(kind: str) -> TypeInformation:
    cols = output_columns(kind)
    return Types.ROW_NAMED(list(cols), [_TYPEINFO[t]() for t in cols.values()])


ORDERS_TYPE = row_type("orders")
FILLS_TAG = OutputTag("fills", row_type("fills"))
EQUITY_TAG = OutputTag("equity", row_type("equity"))


def load_strategy_config(path: Path | str | None, strategy_id: str) -> StrategyConfig:
    """``StrategyConfig`` from ``path`` (JSON or YAML file) if set, else defaults;
    ``strategy_id`` unless the file sets one."""
    values: dict[str, Any] = {"strategy_id": strategy_id}
    if path is not None and str(path):
        text = Path(path).read_text()
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a strategy config is a mapping of StrategyConfig fields")
        values |= data
    return StrategyConfig(**values)


# ------------------------------------------------------------------------ prediction UDF
def prediction_result_type() -> Any:
    return DataTypes.ROW(
        [DataTypes.FIELD(n, _DATATYPE[t]()) for n, t in PREDICTION_COLUMNS.items()]
    )


class PredictFunction(ScalarFunction):
    """``predict(symbol, timeframe, bar_end_ms, <features in model order>)`` (pandas)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        retries: int,
        circuit_open_s: float,
        schedule: list[dict[str, Any]],
        features: Sequence[str],
        admin_token: str | None = None,
    ) -> None:
        self.url = url
        self.admin_token = admin_token  # for a schedule's per-item models (/score)
        self.timeout_s = timeout_s
        self.retries = retries
        self.circuit_open_s = circuit_open_s
        self.schedule = schedule
        self.features = tuple(features)
        self.client: PredictClient | None = None

    def open(self, function_context: Any) -> None:
        logging.basicConfig(level=logging.INFO)
        self.client = PredictClient(
            self.url,
            self.timeout_s,
            self.retries,
            self.circuit_open_s,
            self.schedule,
            self.features,
            admin_token=self.admin_token,
        )

    def close(self) -> None:
        if self.client is not None:
            log.info("predict UDF closing: %s", self.client.stats)
            self.client.close()

    def eval(self, *cols: pd.Series) -> pd.DataFrame:
        assert self.client is not None, "open() was not called"
        names = ["symbol", "timeframe", "bar_end_ms", *self.features]
        frame = pd.DataFrame(
            {n: c.reset_index(drop=True) for n, c in zip(names, cols, strict=True)}
        )
        return self.client.score(frame)


def predict_udf(
    url: str,
    timeout_s: float,
    retries: int,
    circuit_open_s: float,
    schedule_path: Path | str | None = None,
    admin_token: str | None = None,
    features: Sequence[str] | None = None,
) -> UserDefinedScalarFunctionWrapper:
    """The ``predict`` pandas UDF: the service at ``url`` with that timeout, retries and
    circuit; ``schedule_path``: a model per time (a backtest's); ``admin_token``: sent only
    with a schedule (naming a model per item needs it)."""
    if features is None:
        from udfs.model_features import FEATURES

        features = FEATURES
    schedule = [{"from_ms": e.from_ms, "tag": e.tag} for e in load_schedule(schedule_path)]
    fn = PredictFunction(
        url,
        timeout_s,
        retries,
        circuit_open_s,
        schedule,
        features,
        admin_token if schedule else None,
    )
    return udf(fn, result_type=prediction_result_type(), func_type="pandas")


# ---------------------------------------------------------------------- strategy operator
def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def to_row(d: dict[str, Any], columns: dict[str, str], strategy: str, timeframe: str) -> Row:
    """An engine dict as a Flink row of ``columns`` (NaN -> NULL: JSON has no NaN)."""
    full = {**d, "strategy": strategy, "timeframe": timeframe}
    values = []
    for name, dtype in columns.items():
        v = full.get(name)
        if v is not None:
            v = {"int64": int, "float64": float, "bool": bool, "object": str}[dtype](v)
        values.append(_finite_or_none(v))
    return Row(*values)


class StrategyFunction(KeyedProcessFunction):
    """One account: buffer a bar's rows, step the engine when the watermark passes the bar end."""

    def __init__(self, config_json: str, strategy: str, timeframe: str) -> None:
        self.config_json = config_json
        self.strategy = strategy
        self.timeframe = timeframe
        self.engine: StrategyEngine | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.config = StrategyConfig.model_validate_json(self.config_json)
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending_bars", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        )
        self.engine_state = runtime_context.get_state(
            ValueStateDescriptor("engine_state", Types.STRING())
        )
        metrics = runtime_context.get_metrics_group()
        self.late_rows = metrics.counter("strategy_late_rows")
        self.steps = metrics.counter("strategy_steps")
        self.catch_up_bars = metrics.counter("strategy_catch_up_bars")
        self.engine = None  # rebuilt from ValueState on the first timer (after a restore too)
        # the buffered bar times, ascending: read from MapState on the first timer of this
        # instance (a restore's bars included), then kept here (no state scan per timer)
        self.bar_times: list[int] | None = None
        self.end_timer = False  # END_OF_TIME registered by this instance (it is checkpointed)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        t = int(value.bar_end_ms)
        timers = ctx.timer_service()
        if t <= timers.current_watermark():
            self.late_rows.inc()
            log.warning(
                "late row %s@%d (watermark %d): its bar was already processed; dropped",
                value.symbol,
                t,
                timers.current_watermark(),
            )
            return []
        group: dict[str, tuple[Any, ...]] | None = self.pending.get(t)
        if group is None:
            group = {}
            timers.register_event_time_timer(t)
            if not self.end_timer:
                timers.register_event_time_timer(END_OF_TIME)
                self.end_timer = True
            if self.bar_times is not None:
                bisect.insort(self.bar_times, t)
        if value.symbol not in group:  # a replayed duplicate keeps the first row
            group[value.symbol] = (
                float(value.open),
                float(value.high),
                float(value.low),
                float(value.close),
                value.p_up,
                value.p_down,
            )
            self.pending.put(t, group)
        return []

    def _engine(self) -> StrategyEngine:
        if self.engine is None:
            saved = self.engine_state.value()
            self.engine = StrategyEngine(self.config, json.loads(saved) if saved else None)
        return self.engine

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Any]:
        """Step every buffered bar up to ``timestamp``, oldest first (see the module doc)."""
        t = int(timestamp)
        if self.bar_times is None:
            self.bar_times = sorted(int(b) for b in self.pending)
        cut = bisect.bisect_right(self.bar_times, t)
        due, self.bar_times = self.bar_times[:cut], self.bar_times[cut:]
        for bar in due:
            if bar != t:  # at END_OF_TIME every bar's own timer has fired: any left lost it
                self.catch_up_bars.inc()
                log.warning("bar %d stepped at the timer of %d: its own timer was lost", bar, t)
            yield from self._step_bar(bar)

    def _step_bar(self, t: int) -> Iterable[Any]:
        group: dict[str, tuple[Any, ...]] | None = self.pending.get(t)
        self.pending.remove(t)
        if not group:
            return
        engine = self._engine()
        if engine.last_bar_end_ms is not None and t <= engine.last_bar_end_ms:
            log.warning(
                "bar %d is not after the last processed bar %d: dropped", t, engine.last_bar_end_ms
            )
            return
        rows = [
            BarInput(sym, t, o, h, lo, c, p_up, p_down)
            for sym, (o, h, lo, c, p_up, p_down) in group.items()
        ]
        res = engine.step(t, rows)
        self.engine_state.update(json.dumps(engine.state()))
        self.steps.inc()
        ocols, fcols, ecols = (output_columns(k) for k in ("orders", "fills", "equity"))
        for f in res.fills:
            yield FILLS_TAG, to_row(f, fcols, self.strategy, self.timeframe)
        for o in res.orders:
            yield to_row(o, ocols, self.strategy, self.timeframe)
        yield EQUITY_TAG, to_row(res.equity, ecols, self.strategy, self.timeframe)
