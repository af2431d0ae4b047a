"""The one connector-config layer: every Flink ``WITH (...)`` clause comes from here.

SQL files reference ``${trades_source}``, ``${candles_sink}`` ... and the job fills them
from :class:`Endpoints`, so the same statements run against a local broker, a remote
cluster's Kafka, or plain files (``source_connector=filesystem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infra.settings import Settings
from udfs.trade_contract import FIELDS, sql_check, sql_reason, sql_text


def render_with(options: dict[str, str]) -> str:
    def q(v: str) -> str:
        return "'" + str(v).replace("'", "''") + "'"

    return ",\n    ".join(f"{q(k)} = {q(v)}" for k, v in options.items())


def bounded_offsets_option(end_offsets: dict[int, int]) -> str:
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(end_offsets.items()))


@dataclass
class Endpoints:
    """Where a job reads and writes. ``end_offsets`` makes a Kafka source bounded."""

    settings: Settings
    end_offsets: dict[int, int] | None = None
    start_offsets: dict[int, int] | None = None
    files_dir: Path | None = None  # for source_connector == "filesystem"
    extra: dict[str, str] = field(default_factory=dict)
    # topics of the Kafka sources rendered so far (start_sources, source_topic_ids)
    source_topics: list[str] = field(default_factory=list)

    # -- kafka ---------------------------------------------------------------------------
    def _kafka_common(self, topic: str) -> dict[str, str]:
        return {
            "connector": "kafka",
            "topic": topic,
            "properties.bootstrap.servers": self.settings.kafka_bootstrap,
        }

    def kafka_source(
        self, topic: str, fmt: str = "raw", watermark_emit: str | None = None
    ) -> dict[str, str]:
        s = self.settings
        opts = self._kafka_common(topic) | {
            "properties.group.id": s.group_id,
            # Tansu's default group join takes ~23 s; these make it ~instant
            "properties.session.timeout.ms": "6000",
            "properties.heartbeat.interval.ms": "1000",
            "properties.fetch.max.wait.ms": str(s.kafka_fetch_max_wait_ms),
            "format": fmt,
            "scan.watermark.idle-timeout": f"{s.idle_timeout_ms} ms",
            "scan.watermark.emit.strategy": watermark_emit or s.watermark_emit,
        }
        if self.start_offsets:
            opts["scan.startup.mode"] = "specific-offsets"
            opts["scan.startup.specific-offsets"] = bounded_offsets_option(self.start_offsets)
        else:
            # from the earliest offset, as start_sources() commits it, and with no reset
            # policy: Flink passes a source's reset strategy to its consumer, so
            # 'earliest-offset' would make a job whose checkpointed offset is past the end of
            # the log (a broker that lost its data) silently re-read from 0; with 'none' the
            # job fails with OffsetOutOfRange instead
            opts["scan.startup.mode"] = "group-offsets"
            opts["properties.auto.offset.reset"] = "none"
        self.source_topics.append(topic)
        if self.end_offsets is not None:
            # bounded replay; 'latest-offset' is wrong on Tansu (drops the last batch)
            opts["scan.bounded.mode"] = "specific-offsets"
            opts["scan.bounded.specific-offsets"] = bounded_offsets_option(self.end_offsets)
        return opts

    def start_sources(self) -> dict[str, list[int]]:
        """Before a fresh submit: commit the earliest offsets of the group-offsets sources
        rendered so far for the job's group (:func:`infra.kafka.commit_earliest`), so the
        job starts there; a job restored from a checkpoint or savepoint ignores them."""
        if not self.source_topics or self.start_offsets:
            return {}
        from infra.kafka import commit_earliest

        return commit_earliest(self.settings.kafka_bootstrap, self.settings.group_id,
                               self.source_topics)  # fmt: skip

    def source_topic_ids(self) -> dict[str, str | None]:
        """The ids of the Kafka sources' topics now (a job watches them: a recreated topic
        means the broker lost data, :class:`jobs.flink.env.JobHandle`)."""
        if not self.source_topics:
            return {}
        from infra.kafka import topic_ids

        return topic_ids(self.settings.kafka_bootstrap, self.source_topics)

    def kafka_sink(self, topic: str, key_field: str | None = None) -> dict[str, str]:
        opts = self._kafka_common(topic) | {"sink.delivery-guarantee": "at-least-once"}
        json_opts = {
            "json.encode.decimal-as-plain-number": "true",
            "json.timestamp-format.standard": "ISO-8601",
        }
        if key_field:
            opts |= {"key.format": "raw", "key.fields": key_field, "value.format": "json"}
            opts |= {f"value.{k}": v for k, v in json_opts.items()}
        else:
            opts |= {"format": "json"} | json_opts
        return opts

    # -- files ---------------------------------------------------------------------------
    def _files(self) -> Path:
        if self.files_dir is None:
            raise ValueError("source_connector=filesystem needs files_dir")
        return self.files_dir

    def file_source(self, name: str) -> dict[str, str]:
        return {"connector": "filesystem", "path": str(self._files() / name), "format": "raw"}

    def file_sink(self, name: str) -> dict[str, str]:
        return {
            "connector": "filesystem",
            "path": str(self._files() / name),
            "format": "json",
            "json.encode.decimal-as-plain-number": "true",
            "json.timestamp-format.standard": "ISO-8601",
        }

    # -- what the candles SQL needs ------------------------------------------------------
    def candles_params(self) -> dict[str, str]:
        s = self.settings
        if s.source_connector == "kafka":
            source = self.kafka_source(s.topic_trades)
            sinks = {
                "candles_sink": self.kafka_sink(s.topic_candles, key_field="candle_key"),
                "dlq_sink": self.kafka_sink(s.topic_trades_dlq),
                "late_sink": self.kafka_sink(s.topic_trades_late),
            }
        else:
            source = self.file_source(s.topic_trades)
            sinks = {
                "candles_sink": self.file_sink(s.topic_candles),
                "dlq_sink": self.file_sink(s.topic_trades_dlq),
                "late_sink": self.file_sink(s.topic_trades_late),
            }
        check = sql_check(s.trade_max_future_ms)  # the source's computed columns call it
        params = {
            "source_metadata_columns": (
                "src_partition INT METADATA FROM 'partition' VIRTUAL,\n"
                "    src_offset BIGINT METADATA FROM 'offset' VIRTUAL"
                if s.source_connector == "kafka"
                else "src_partition AS CAST(NULL AS INT),\n    src_offset AS CAST(NULL AS BIGINT)"
            ),
            "trades_source": render_with(source | self.extra),
            "watermark_delay_s": f"{s.watermark_delay_ms / 1000:.3f}",
            "trade_check": check,
            "trade_reason_at_source": sql_reason(check),
            "ts_ms_at_source": sql_text("ts_ms", check),
            "trade_reason": sql_reason("trade_check"),
            **{f"field_{f}": sql_text(f, "trade_check") for f in FIELDS},
            "trades_topic": s.topic_trades,
        }
        params |= {k: render_with(v) for k, v in sinks.items()}
        return params

    # -- what the features SQL needs -----------------------------------------------------
    def features_params(self) -> dict[str, str]:
        from udfs.indicators import FEATURE_NAMES, MAX_WINDOW

        s = self.settings
        names = FEATURE_NAMES
        return {
            "candles_source": render_with(
                self.kafka_source(
                    s.topic_candles, fmt="json", watermark_emit=s.features_watermark_emit
                )
                | self.extra
            ),
            "features_sink": render_with(
                self.kafka_sink(s.topic_features, key_field="feature_key")
            ),
            "watermark_delay_s": f"{s.features_watermark_delay_ms / 1000:.3f}",
            "over_preceding": str(MAX_WINDOW - 1),
            "feature_column_types": ",\n    ".join(f"{n} DOUBLE" for n in names),
            "feature_column_values": ",\n    ".join(f"f[{i + 1}]" for i in range(len(names))),
            "features_ready_expr": " AND ".join(
                f"f[{i + 1}] IS NOT NULL" for i in range(len(names))
            ),
        }

    # -- what the strategy SQL needs -----------------------------------------------------
    def strategy_params(
        self, from_ms: int | None = None, to_ms: int | None = None
    ) -> dict[str, str]:
        """Placeholders of sql/flink/strategy.sql: the features source, the four sinks
        (predictions, orders, fills, equity; JSON values, Kafka keys), the filter (timeframe,
        bars with ``from_ms <= window_end_ms <= to_ms``; None = unbounded) and the predict
        UDF's arguments (the model's feature list, udfs.model_features.FEATURES)."""
        from udfs.flink_strategy import output_columns, sql_columns
        from udfs.indicators import FEATURE_NAMES
        from udfs.model_features import FEATURES

        s = self.settings
        return {
            # on-periodic: one watermark (= one Python bundle flush = one /score call) per
            # interval, not per record
            "features_source": render_with(
                self.kafka_source(s.topic_features, fmt="json", watermark_emit="on-periodic")
                | self.extra
            ),
            "feature_column_types": ",\n    ".join(f"`{n}` DOUBLE" for n in FEATURE_NAMES),
            "predict_feature_args": ", ".join(f"`{n}`" for n in FEATURES),
            "strategy_timeframe": s.strategy_timeframe.replace("'", "''"),
            "from_ms": str(int(from_ms) if from_ms is not None else 0),
            "to_ms": str(int(to_ms) if to_ms is not None else 2**63 - 1),
            "predictions_sink": render_with(
                self.kafka_sink(s.topic_predictions, key_field="prediction_key")
            ),
            "orders_sink": render_with(
                self.kafka_sink(s.topic_orders, key_field="client_order_id")
            ),
            "fills_sink": render_with(self.kafka_sink(s.topic_fills, key_field="client_order_id")),
            "equity_sink": render_with(self.kafka_sink(s.topic_equity, key_field="strategy")),
            "order_columns": sql_columns(output_columns("orders")),
            "fill_columns": sql_columns(output_columns("fills")),
            "equity_columns": sql_columns(output_columns("equity")),
        }
