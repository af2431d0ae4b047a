"""``candleflow feast ...``, ``dataset build``, ``train``: the feature store and the model."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import (
    TaskID,
)
from rich.table import Table

from infra.settings import get_settings
from jobs.cli.common import console, fail, progress


def feast_env_cmd() -> None:
    """Print `export` lines for the feast CLI: eval "$(candleflow feast env)".

    feature_repo/feature_store.yaml and its definitions read these resolved settings
    (project, state folder, Redis host/port, TTL).
    """
    import shlex

    from infra.feature_store import feast_env

    for k, v in feast_env(get_settings()).items():
        print(f"export {k}={shlex.quote(v)}")


def feast_apply() -> None:
    """Register entities, sources, feature views and the model_v1 service (= feast apply)."""
    from infra.feature_store import FeatureStoreClient

    s = get_settings()
    FeatureStoreClient(s).apply()
    console.print(f"applied project {s.feast_project!r}; registry {s.feast_registry}")


def feast_backfill(
    file: Path = typer.Argument(
        None, help="1m candles csv(.gz): ts_ms,symbol,open,high,low,close,volume[,vwap]"
    ),
    start: str = typer.Option("", help="first bar start, ISO (default: file start)"),
    end: str = typer.Option("", help="end (exclusive), ISO (default: file end)"),
    symbols: str = typer.Option("", help="comma-separated symbols (default: all)"),
) -> None:
    """Compute features in batch from 1m candles and append them to the offline store.

    For training on history before the stream has written it (the Flink features job
    computes the same values); default file: the real 2021 Binance 1m candles.
    """
    import pandas as pd

    from infra.feature_store import FeatureStoreClient
    from jobs.ml.dataset import feature_rows_from_candles, utc_ts

    s = get_settings()
    path = file or s.data_dir / "binance_1m_top5_2021.csv.gz"
    df = pd.read_csv(path)
    if start:
        df = df[df.ts_ms >= utc_ts(pd.Timestamp(start)).value // 1_000_000]
    if end:
        df = df[df.ts_ms < utc_ts(pd.Timestamp(end)).value // 1_000_000]
    if symbols:
        df = df[df.symbol.isin([x.strip() for x in symbols.split(",")])]
    if df.empty:
        fail("no candles selected")
    client = FeatureStoreClient(s)
    client.apply()
    t0 = time.monotonic()
    n = 0
    with progress() as prog:
        task = prog.add_task("features", total=df.symbol.nunique())
        for _, g in df.groupby("symbol"):
            n += len(g)
            client.write_offline(feature_rows_from_candles(g, "1m"))
            prog.advance(task)
    console.print(f"{n:,} feature rows -> {s.feast_offline_dir} in {time.monotonic() - t0:.1f} s")


def dataset_build(
    start: str = typer.Option(..., help="first bar event time, ISO (UTC if no zone)"),
    end: str = typer.Option(..., help="end (exclusive), ISO"),
    label: list[str] = typer.Option(
        ..., help="fwd_ret_N (N bars ahead); repeat or comma-separate for several"
    ),
    out: Path = typer.Option(..., help="output parquet file"),
    symbols: str = typer.Option("", help="comma-separated symbols (default: all)"),
    timeframe: list[str] = typer.Option([], help="timeframes, e.g. 1m (default: all)"),
    flat_threshold: float = typer.Option(
        0.001, help="class: up if fwd_ret > T, down if < -T, else flat"
    ),
) -> None:
    """Training set: Feast point-in-time features (model_v1) + forward-return labels.

    Rows are bars with event time in [start, end); rows whose label is unknown (end of
    data, missing future bar) are dropped. Labels look ahead, features never do.
    """
    import pandas as pd

    from jobs.ml.dataset import build_dataset

    try:
        t_start, t_end = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as e:
        fail(f"bad --start/--end: {e}")
        return
    with progress() as prog:
        task = prog.add_task("point-in-time join", total=None)

        def advance(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        try:
            res = build_dataset(
                get_settings(),
                t_start,
                t_end,
                label,
                out,
                symbols=[x.strip() for x in symbols.split(",") if x.strip()] or None,
                timeframes=timeframe or None,
                flat_threshold=flat_threshold,
                on_progress=advance,
            )
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
            return
    console.print(
        f"wrote {res.rows:,} rows to {res.path} in {res.seconds:.1f} s "
        f"({res.dropped_unknown_label:,} dropped: label unknown)"
    )
    t = Table("label", "down", "flat", "up")
    for name, counts in res.balance.items():
        t.add_row(name, *(f"{counts[c]:,}" for c in ("down", "flat", "up")))
    console.print(t)


def train_cmd(
    dataset: Path = typer.Argument(..., help="training set parquet (candleflow dataset build)"),
    label: str = typer.Option("fwd_ret_5", help="fwd_ret_N: its 3-class label is the target"),
    folds: int = typer.Option(5, min=1, help="walk-forward folds"),
    scheme: str = typer.Option(
        "expanding", help="expanding (all earlier data) or rolling (last --window-blocks)"
    ),
    window_blocks: int = typer.Option(2, min=1, help="rolling: training blocks per fold"),
    rounds: int = typer.Option(400, min=1, help="max boosting rounds (early stopping per fold)"),
    early_stopping: int = typer.Option(30, min=1, help="early stopping patience (rounds)"),
    max_depth: int = typer.Option(4, min=1),
    eta: float = typer.Option(0.05, min=0.0),
    nthread: int = typer.Option(0, min=0, help="XGBoost threads (0 = all cores)"),
    model_name: str = typer.Option("", help="BentoML model name (default MODEL_NAME)"),
    reports_dir: Path = typer.Option(None, help="report folder (default REPORTS_DIR)"),
    save: bool = typer.Option(True, "--save/--no-save", help="save to the BentoML model store"),
) -> None:
    """Walk-forward XGBoost training on a Feast training set; saves the booster to the
    BentoML model store ($BENTOML_HOME) and writes report.json/.md + PNG plots."""
    from jobs.ml.train import TrainConfig, train

    cfg = TrainConfig(
        label=label,
        folds=folds,
        scheme=scheme,
        window_blocks=window_blocks,
        rounds=rounds,
        early_stopping=early_stopping,
        max_depth=max_depth,
        eta=eta,
        nthread=nthread,
    )
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        try:
            res = train(
                get_settings(),
                dataset,
                cfg,
                save=save,
                model_name=model_name or None,
                reports_dir=reports_dir,
                on_progress=advance,
            )
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
            return
    t = Table("predictor", "log loss", "accuracy", "AUC OvR", "AUC up", "hit rate", "ret bps")
    for name, m in res.report["metrics"].items():
        t.add_row(
            name,
            *(
                "-" if m[k] is None else f"{m[k]:.4f}" if k != "mean_ret_bps" else f"{m[k]:.2f}"
                for k in ("log_loss", "accuracy", "auc_ovr", "auc_up", "hit_rate", "mean_ret_bps")
            ),
        )
    console.print(t)
    console.print(
        f"model {res.tag or '(not saved)'}: {res.report['rows']:,} rows, "
        f"{res.report['rounds']} rounds, {res.report['seconds']:.1f} s; report {res.report_dir}"
    )
