"""The service's settings: one typed class, read from the environment, `.env` and `.env.local`."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = BACKEND_DIR.parent
DEFAULT_MODEL_PATH = "Model/AutoEncoder"
# Where prometheus-client's processes count together (set by the launcher before any of them imports it).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[IPNetwork]:
    """Comma-separated IP addresses and CIDR networks (``10.0.0.5, 192.168.0.0/16, ::1``) as networks;
    ``ValueError`` naming an entry that is neither."""
    networks = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as error:
            raise ValueError(
                f"{entry!r} is not an IP address or network: list the reverse proxies' addresses (10.0.0.5) or "
                "networks (10.0.0.0/8), comma-separated"
            ) from error
    return networks


def resolve_backend_path(path: str | Path) -> Path:
    """Resolve a relative path against ``backend/``, so settings mean the same whatever the working directory."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else BACKEND_DIR / candidate


class Settings(BaseSettings):
    """Every configuration variable of the contract, with its default."""

    model_config = SettingsConfigDict(
        env_file=(REPO_ROOT / ".env", REPO_ROOT / ".env.local"), env_file_encoding="utf-8", extra="ignore"
    )

    mongodb_url: str | None = None
    mongodb_db: str = "anomaly_detection"
    autoencoder_model_path: str = DEFAULT_MODEL_PATH
    models_dir: str | None = None
    autoencoder_fallback_train: bool = False
    jwt_secret: str | None = None
    access_token_expire_minutes: int = Field(default=60, gt=0)
    allow_registration: bool = True
    max_upload_mb: int = Field(default=100, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 1
    data_dir: str = str(REPO_ROOT / ".data")

    # Beyond the contract's table: how the service runs.
    # "local" lets the launcher generate and keep a JWT secret under DATA_DIR; anywhere else a real secret
    # is required.
    environment: Literal["local", "production"] = "production"
    # Epochs of the slow fallback path (AUTOENCODER_FALLBACK_TRAIN=true), which trains on each upload.
    autoencoder_fallback_epochs: int = Field(default=50, gt=0)
    # How long a claimed analysis stays owned without a heartbeat before another process may take it over.
    analysis_lease_seconds: float = Field(default=60, gt=0)
    # How often an idle analysis runner looks for queued work that another process accepted.
    analysis_poll_seconds: float = Field(default=1.0, gt=0)
    # Failed logins allowed per username and per client address within one window; past either, logins
    # are refused unchecked (429 with Retry-After) until the window ends.
    login_max_failures_per_username: int = Field(default=10, gt=0)
    login_max_failures_per_address: int = Field(default=50, gt=0)
    login_failure_window_seconds: int = Field(default=900, gt=0)
    # Registrations allowed per client address within one window (each costs a deliberately slow hash).
    registrations_per_address: int = Field(default=20, gt=0)
    registration_window_seconds: int = Field(default=3600, gt=0)
    # Addresses or networks of the reverse proxies whose X-Forwarded-For names the client (comma-separated);
    # empty, the default: the socket's peer is the client, whatever the header says.
    forwarded_allow_ips: str = ""
    # Result downloads prepared at once by one process; more answer 429 with Retry-After.
    max_concurrent_exports: int = Field(default=2, gt=0)
    # How long a database operation may wait for an unreachable server before the request answers 503.
    database_timeout_seconds: float = Field(default=10.0, gt=0)
    # How often, at most, the model folders are checked for a new version (a retrained or re-linked model).
    model_check_seconds: float = Field(default=2.0, ge=0)
    # What one upload may cost to read: columns, cells (a 1,000,000 x 20 table passes), and the text an .xlsx's
    # shared strings may expand to (each cell that points at a string gets its own copy in memory).
    max_columns: int = Field(default=10_000, gt=0)
    max_cells: int = Field(default=25_000_000, gt=0)
    max_text_mb: int = Field(default=512, gt=0)
    # Uploads are parsed in child processes: how many at once, the address space each may use, how long one
    # may take, and how many uploads may wait for a free one (past that: 429 with Retry-After).
    parse_workers: int = Field(default=2, gt=0)
    parse_memory_mb: int = Field(default=4096, ge=1024)
    parse_timeout_seconds: float = Field(default=300, gt=0)
    parse_queue_limit: int = Field(default=16, ge=0)
    # What one account may keep: datasets, and megabytes of uploaded files and their parsed tables.
    max_datasets_per_user: int = Field(default=200, gt=0)
    max_storage_mb_per_user: int = Field(default=2000, gt=0)

    # Job workers (python -m app.worker).
    # How many the launcher (python -m app.serve, make run) starts beside the API; 0 for an API-only host.
    job_workers: int = Field(default=1, ge=0, le=64)
    # Loaded models a worker keeps (least recently used evicted).
    model_cache_size: int = Field(default=8, ge=1, le=256)
    # A queued analysis whose model version no live worker serves fails once it has waited this long.
    unserved_grace_seconds: float = Field(default=30.0, gt=0)
    # GridFS files older than this that belong to nothing are deleted, at most this often.
    orphan_file_age_seconds: float = Field(default=3600.0, gt=0)
    orphan_sweep_seconds: float = Field(default=600.0, gt=0)
    # Analyses one user may have queued or running at once; past it, 429 with Retry-After.
    max_analyses_in_progress_per_user: int = Field(default=10, ge=1)

    # Users' own models (POST /api/anomaly/models).
    # A training uses a uniform sample of at most this many of the dataset's rows (bounds its memory and time).
    training_max_rows: int = Field(default=200_000, ge=100)
    # Trainings one user may have queued or running at once (one runs at a time); past it, 429.
    max_trainings_in_progress_per_user: int = Field(default=3, ge=1)
    # Models (names) and versions per model one user may keep; past either, training answers 409.
    max_models_per_user: int = Field(default=20, ge=1)
    max_versions_per_model: int = Field(default=10, ge=1)
    # Rows of one dataset an analyst may label (PUT .../rows/{row}/label); past it, 409.
    max_labels_per_dataset: int = Field(default=10_000, ge=1)

    @property
    def model_path(self) -> Path:
        """The default model directory, absolute."""
        return resolve_backend_path(self.autoencoder_model_path)

    @property
    def model_path_is_explicit(self) -> bool:
        """Whether ``AUTOENCODER_MODEL_PATH`` was configured (a configured path is never trained into)."""
        return "autoencoder_model_path" in self.model_fields_set

    @property
    def models_root(self) -> Path:
        """The folder whose sub-folders are the loadable models."""
        return resolve_backend_path(self.models_dir) if self.models_dir else self.model_path.parent

    @property
    def data_path(self) -> Path:
        """The folder for the embedded database's files and the generated local secret (relative paths are
        relative to the repository root, as the default is)."""
        candidate = Path(self.data_dir).expanduser()
        return (candidate if candidate.is_absolute() else REPO_ROOT / candidate).resolve()

    @property
    def local_jwt_secret_path(self) -> Path:
        """Where the launcher keeps the JWT secret it generated for local use."""
        return self.data_path / "jwt_secret"

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips_are_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_proxies(self) -> list[IPNetwork]:
        """``FORWARDED_ALLOW_IPS`` as networks (a single address is a network of one)."""
        return parse_networks(self.forwarded_allow_ips)

    @property
    def max_upload_bytes(self) -> int:
        """``MAX_UPLOAD_MB`` in bytes."""
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_storage_bytes_per_user(self) -> int:
        """``MAX_STORAGE_MB_PER_USER`` in bytes."""
        return self.max_storage_mb_per_user * 1024 * 1024


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
