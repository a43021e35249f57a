"""The one typed settings object for fraud-bento.

Values come, highest priority first, from keyword arguments (the CLIs), environment variables
prefixed ``FRAUD_`` (nested sections joined by ``__``, e.g. ``FRAUD_TUNING__TRIALS=5``), a TOML
file (``--config`` or ``FRAUD_CONFIG``), then the defaults below. ``BENTOML_HOME`` is BentoML's own
variable and is left to BentoML.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "FRAUD_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG"
MODEL_NAME = "fraud_rf"


class ColumnsConfig(BaseModel):
    """Which input columns play which role. The defaults match the embedded simulator.

    With `payment_features` on, the model's inputs are the payment features engineered from the
    customer, terminal, amount and timestamp columns, then `extra_features`; off, they are
    exactly `extra_features` (a table of precomputed features) and the customer, terminal and
    amount settings are not used.
    """

    transaction_id: str = Field("transaction_id", description="The unique id column.")
    timestamp: str = Field("tx_datetime", description="The timestamp column.")
    customer_id: str = Field("customer_id", description="The customer (card) id column.")
    terminal_id: str = Field("terminal_id", description="The terminal (merchant) id column.")
    amount: str = Field("tx_amount", description="The amount column.")
    label: str = Field("tx_fraud", description="The 0/1 label column.")
    payment_features: bool = Field(
        True,
        description="Engineer payment features from customer, terminal and amount columns; "
        "false: the model's inputs are exactly extra_features.",
    )
    extra_features: list[str] = Field(
        default_factory=list,
        description="Numeric columns passed to the model as they are, after the engineered ones.",
    )

    def roles(self) -> dict[str, str]:
        """Setting name -> column, for every role a column plays (each extra feature one)."""
        roles = {
            "columns.transaction_id": self.transaction_id,
            "columns.timestamp": self.timestamp,
            "columns.label": self.label,
        }
        if self.payment_features:
            roles["columns.customer_id"] = self.customer_id
            roles["columns.terminal_id"] = self.terminal_id
            roles["columns.amount"] = self.amount
        for position, name in enumerate(self.extra_features):
            roles[f"columns.extra_features[{position}]"] = name
        return roles

    @model_validator(mode="after")
    def _one_role_per_column(self) -> ColumnsConfig:
        settings_of: dict[str, list[str]] = {}
        for setting, column in self.roles().items():
            settings_of.setdefault(column, []).append(setting)
        problems = [
            f"column '{column}' is mapped to {' and '.join(settings)}"
            for column, settings in settings_of.items()
            if len(settings) > 1
        ]
        if not self.payment_features and not self.extra_features:
            problems.append(
                "columns.payment_features is false, so columns.extra_features must name the "
                "model's input columns"
            )
        if problems:
            raise ValueError(
                "; ".join(problems) + ": give each role its own column (one setting per column)"
            )
        return self


class CleaningConfig(BaseModel):
    """Explicit cleaning: off by default, so any bad row fails validation."""

    drop_invalid_rows: bool = Field(
        False,
        description="Drop rows with nulls, bad amounts, bad timestamps or duplicate ids "
        "(counted per reason in the run report) instead of failing.",
    )


class SplitConfig(BaseModel):
    """Temporal split in whole days counted from the first day of the table."""

    burn_in_days: int = Field(30, ge=0, description="History used only to build features.")
    train_days: int = Field(49, ge=7, description="Training days.")
    delay_days: int = Field(7, ge=1, description="Label delay: gap before the test period.")
    test_days: int = Field(28, ge=1, description="Held-out test days.")
    folds: int = Field(3, ge=1, description="Time-ordered validation folds inside training.")
    fold_validation_days: int = Field(7, ge=1, description="Days each fold validates on.")

    @model_validator(mode="after")
    def _folds_fit_in_training(self) -> SplitConfig:
        needed = self.folds * self.fold_validation_days + self.delay_days
        if needed >= self.train_days:
            raise ValueError(
                f"split.folds ({self.folds}) x split.fold_validation_days "
                f"({self.fold_validation_days}) plus split.delay_days ({self.delay_days}) = "
                f"{needed} days do not fit in split.train_days ({self.train_days}): lower "
                "split.folds or split.fold_validation_days, or raise split.train_days"
            )
        return self


class TuningConfig(BaseModel):
    trials: int = Field(15, ge=0, description="New trials; 0 reuses a study's best trial.")
    timeout_s: float | None = Field(600.0, description="Stop tuning after this many seconds.")
    storage: str | None = Field(
        None, description="Optuna storage URL; default: a journal file in the run folder."
    )
    study_name: str | None = Field(
        None, description="Optuna study name (default: `fraud_rf-<run>`)."
    )
    sample_rows: int = Field(
        200_000,
        ge=0,
        description="Most rows a trial fits on in each fold: all payments of a sample of cards "
        "(0: all rows).",
    )
    rungs: int = Field(
        3,
        ge=1,
        le=5,
        description="Sample sizes a trial climbs, each 3x the one below; a third of the trials "
        "go on at each (successive halving). 1: every trial fits on the full sample.",
    )
    tree_rows: int = Field(
        500_000,
        ge=0,
        description="Most rows each tree draws (its bootstrap sample), in tuning and in the "
        "final fit on the whole training period (0: as many as it has).",
    )
    n_jobs: int = Field(2, ge=1, description="Threads for each forest fit.")
    max_trees: int = Field(200, ge=10, description="Upper bound of the tree count.")
    max_depth: int = Field(14, ge=2, description="Upper bound of the tree depth.")


class GateConfig(BaseModel):
    min_test_roc_auc: float = Field(
        0.95, gt=0, le=1, description="Promotion gate: least test ROC-AUC."
    )
    threshold_min_precision: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Decision threshold: highest recall at this precision on the last fold.",
    )


class PromotionConfig(BaseModel):
    """When a challenger replaces the champion (`python -m training retrain --promote`)."""

    min_pr_auc_gain: float = Field(
        0.0, description="The challenger's PR-AUC must be at least the champion's plus this."
    )
    confidence: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of paired bootstrap resamples in which the challenger must beat "
        "the champion by that margin.",
    )
    bootstrap_samples: int = Field(500, ge=10, description="Paired bootstrap resamples.")


class SimulatorConfig(BaseModel):
    customers: int = Field(1000, ge=10, description="Simulated customers.")
    terminals: int = Field(2000, ge=10, description="Simulated terminals.")
    days: int = Field(120, ge=1, description="Simulated days.")
    seed: int = Field(7, description="Simulator seed.")
    drift_start_day: int | None = Field(
        None, description="First day of drifted genuine behaviour (unset: none)."
    )


class StoreConfig(BaseModel):
    pin_file: Path = Field(Path("ops/model.lock"), description="The promoted model tag.")
    challenger_pin_file: Path = Field(
        Path("ops/challenger.lock"), description="The challenger's tag, when one is pinned."
    )
    promotion_log: Path = Field(
        Path("ops/promotions.jsonl"), description="Append-only promotion history."
    )


class ServingConfig(BaseModel):
    max_batch_size: int = Field(
        2048, ge=2, description="Most rows one forest evaluation takes (adaptive batching)."
    )
    max_latency_ms: int = Field(
        200, ge=1, description="Latency bound of the batcher; queued work past it gets 503."
    )
    admission_target_ms: float = Field(
        30.0,
        ge=0,
        description="A scoring request is refused at once, before its body is read (HTTP 503 "
        "with Retry-After, gRPC RESOURCE_EXHAUSTED), while the oldest request in progress has "
        "waited longer than this (docs/serving.md, Overload); 0: every request is taken on.",
    )
    max_rows_per_request: int = Field(
        1000, ge=1, description="Rows one scoring request may carry (any form)."
    )
    explain_max_rows: int = Field(50, ge=1, description="Rows one /explain call may ask for.")
    grpc_port: int = Field(3001, ge=0, le=65535, description="0 disables the gRPC server.")
    grpc_host: str = Field(
        "0.0.0.0", description="gRPC bind address."  # noqa: S104 - a server binds every interface
    )
    workers: int = Field(1, ge=1, description="API worker processes.")
    engine: Literal["auto", "onnx", "tl2cgen", "sklearn"] = Field(
        "auto",
        description="auto: the first that loads here of the engines the model passed its parity "
        "gates with, cheapest first by the batch cost measured when it was saved (ONNX Runtime, "
        "or the forest compiled to native code by tl2cgen), scikit-learn when none loads; onnx "
        "or tl2cgen: that engine (scikit-learn when it cannot load, with the reason logged and "
        "in /model_info); sklearn: scikit-learn.",
    )
    intra_op_threads: int = Field(
        1,
        ge=1,
        description="ONNX Runtime threads per forest call (native code runs in the caller's).",
    )
    inline_max_rows: int = Field(
        512,
        ge=0,
        description="Batches of at most this many rows are scored on the event loop, larger "
        "ones in the engine thread (0: always the thread).",
    )
    fast_path: bool = Field(
        True,
        description="Serve /predict, /predict_columns, /score, /score_columns, OIP infer and "
        "KServe V1 predict from the lean ASGI scoring path; false: through BentoML's typed API "
        "(the same answers, slower).",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request not answered within this, body included, is dropped (408 while "
        "its body is still arriving, 504 after).",
    )
    access_log: bool = Field(
        False,
        description="BentoML's access log line for the scoring routes too (other routes always "
        "have it).",
    )
    trace_scoring: bool = Field(
        False, description="OpenTelemetry spans for the scoring routes (other routes have them)."
    )
    request_log: bool = Field(
        False,
        description="One JSON log line per scored request; refused requests are always logged.",
    )
    stall_log_ms: float = Field(
        20.0,
        ge=0,
        description="Log each event-loop stall longer than this, with its GC pauses (0: off).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of the service's JSON log lines."
    )


class ChallengerConfig(BaseModel):
    """How a pinned challenger serves beside the champion (docs/serving.md, "Challengers")."""

    mode: Literal["shadow", "canary"] = Field(
        "shadow",
        description="shadow: scores every row off the response path, decides nothing; canary: "
        "decides canary_share of the transactions.",
    )
    canary_share: float = Field(
        0.05, ge=0, le=1, description="Share of transactions the challenger decides in canary."
    )
    max_queued_rows: int = Field(
        20_000, ge=1, description="Rows waiting for the shadow challenger; past it, not shadowed."
    )
    shadow_priority: Literal["idle", "normal"] = Field(
        "idle",
        description="idle: the shadow scores with the CPU the champion leaves (Linux SCHED_IDLE); "
        "on a busy core it sheds rows (counted in /challenger and "
        "fraud_challenger_shadow_dropped_rows), not champion requests. normal: it competes with "
        "the champion for the core (every row shadowed while max_queued_rows "
        "holds, at the champion's expense).",
    )


class MonitoringConfig(BaseModel):
    enabled: bool = Field(
        True, description="Profile requests and log predictions (off only to measure the cost)."
    )
    drift_p_value: float = Field(0.01, gt=0, lt=1, description="Significance of a drift test.")
    drift_min_effect: float = Field(
        0.1, gt=0, le=1, description="Least KS distance (or Cramér's V) that counts as drift."
    )
    exclude_features: list[str] = Field(
        default_factory=lambda: ["tx_during_weekend"],
        description="Features left out of drift checks: calendar shares swing within a week.",
    )
    window_s: float = Field(
        300.0, gt=0, description="Length of a profiling window, aligned on the clock."
    )

    directory: Path | None = Field(
        None, description="Where window profiles go (default: $BENTOML_HOME/monitoring)."
    )
    max_queued_rows: int = Field(
        100_000, ge=1, description="Rows waiting for the profiler; past it samples are dropped."
    )
    profile_max_rows_per_s: float = Field(
        500.0, gt=0, description="Rows profiled per second; past it rows are sampled uniformly."
    )
    feedback_db: Path | None = Field(
        None, description="Prediction log joined with labels (default: <directory>/feedback.db)."
    )
    log_sample: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of requests written to the prediction log, chosen by a hash of the "
        "request id (a retry is logged, or not, like its first attempt); labels of requests left "
        "out come back unknown. Below 1 only when every row costs too much (docs/monitoring.md).",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL of a prediction log shared by every replica (instead of the "
        "SQLite file); keep the password out of it (PGPASSWORD or a .pgpass file).",
    )
    realized_refresh_s: float = Field(
        60.0, gt=0, description="Realized figures are re-read from the log this often."
    )
    realized_window_days: float = Field(
        30.0, gt=0, description="Realized precision/recall cover predictions of this many days."
    )
    prediction_retention_days: float = Field(
        90.0, gt=0, description="Logged predictions older than this are deleted."
    )
    precision_floor: float = Field(
        0.5, ge=0, le=1, description="Realized precision below this raises an alert."
    )
    max_feedback_labels: int = Field(
        10_000, ge=1, description="Labels one /feedback call may carry."
    )


class PaymentsConfig(BaseModel):
    """Scoring raw payments (/score): the online state their features are computed from."""

    store: Literal["embedded", "redis", "off"] = Field(
        "embedded",
        description="Where the online feature state lives: 'embedded' (in the worker, written "
        "through to state_path; one worker only), 'redis' (redis_url: every worker and "
        "replica) or 'off' (no /score).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="The Redis of the shared state (store = 'redis'); with a password, set "
        "FRAUD_PAYMENTS__REDIS_URL from a secret at run time, never in a file.",
    )
    redis_prefix: str = Field(
        "fraud-bento:", description="Prefix of the state's Redis keys (one per deployment)."
    )
    redis_timeout_s: float = Field(
        0.5,
        gt=0,
        description="A Redis call slower than this fails: /score answers 503. A call scores at "
        "most 100 payments: 25 ms of Redis CPU on the tests' table, 134 ms at most with this "
        "2-core machine busy; raise it where cards keep much longer histories.",
    )
    state_path: Path | None = Field(
        None,
        description="The embedded state's SQLite file (default: <monitoring directory>/"
        "payment_state.db).",
    )
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="A payment timestamped further ahead of the clock is refused."
    )
    max_rows_per_request: int = Field(
        1_000, ge=1, description="Payments one /score call may carry."
    )


class SecurityConfig(BaseModel):
    """API keys themselves come from $FRAUD_API_KEYS or `api_keys_file`, never from settings."""

    api_keys_file: Path | None = Field(
        None, description="A file of API keys, one per line (e.g. a mounted secret)."
    )
    metrics_open: bool = Field(True, description="/metrics answers without an API key.")
    rate_limit_per_s: float = Field(
        0.0, ge=0, description="Requests a second per API key (or client address); 0: no limit."
    )
    rate_limit_burst: int = Field(100, ge=1, description="Requests a client may send at once.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest HTTP request body (413 past it)."
    )
    max_grpc_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest gRPC message (RESOURCE_EXHAUSTED past it)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    seed: int = Field(42, description="Seed of tuning, the forests and the SHAP sample.")
    runs_dir: Path = Field(Path("runs"), description="Where run folders go.")
    shap_sample_rows: int = Field(500, ge=10, description="Test rows explained with SHAP.")
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    challenger: ChallengerConfig = Field(default_factory=ChallengerConfig)
    payments: PaymentsConfig = Field(default_factory=PaymentsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    model_tag: str | None = Field(
        None, description="Serve this exact tag instead of the pinned one (one run only)."
    )
    challenger_tag: str | None = Field(
        None, description="Serve this tag as the challenger (one run only); empty: none."
    )

    def monitoring_directory(self) -> Path:
        home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
        return self.monitoring.directory or home / "monitoring"

    def feedback_db_path(self) -> Path:
        return self.monitoring.feedback_db or self.monitoring_directory() / "feedback.db"

    def payment_state_path(self) -> Path:
        return self.payments.state_path or self.monitoring_directory() / "payment_state.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional TOML file and explicit overrides."""
    if config_file is None:
        return Settings(**overrides)
    if not Path(config_file).is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    previous = os.environ.get(CONFIG_FILE_ENV)
    os.environ[CONFIG_FILE_ENV] = str(config_file)
    try:
        return Settings(**overrides)
    finally:
        if previous is None:
            del os.environ[CONFIG_FILE_ENV]
        else:
            os.environ[CONFIG_FILE_ENV] = previous
