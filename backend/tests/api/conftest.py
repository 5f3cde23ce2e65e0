"""End-to-end fixtures: one real embedded database and real API server processes, shared by the session.

Servers are started with ``python -m app.serve`` (the launcher ``make run`` uses) on free ports, all on the
same database; each test registers its own users, so tests never see each other's data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.db.embedded import EmbeddedDatabase
from app.utils.sample_data import make_normal_transactions
from tests.api.support import (
    EXPORT_MAX_UPLOAD_MB,
    JWT_SECRET,
    MAX_LOGIN_FAILURES_PER_ADDRESS,
    MAX_LOGIN_FAILURES_PER_USERNAME,
    MAX_UPLOAD_MB,
    Account,
    ApiServer,
    register,
)

ServerFactory = Callable[[str, dict[str, str]], ApiServer]
API_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against real processes: marked ``e2e``, so ``-m "not e2e"`` leaves them out."""
    for item in items:
        if API_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded SecantusDB for the whole session."""
    root = tmp_path_factory.mktemp("database")
    with EmbeddedDatabase(root / "db", root / "secantusd.log") as database:
        yield database.url


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained once per session on generated normal transactions."""
    from app.utils.anomaly_detector import TabularAnomalyDetector

    directory = tmp_path_factory.mktemp("models") / "AutoEncoder"
    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(make_normal_transactions(2000, seed=1), epochs=5, batch_size=64, validation_split=0.2, verbose=0)
    detector.save(directory, training_report=False)
    return directory


@pytest.fixture(scope="session")
def server_env(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What every test server shares: the database, the secret and the limits."""
    return {
        "MONGODB_URL": database_url,
        "MONGODB_DB": "api_tests",
        "JWT_SECRET": JWT_SECRET,
        "ENVIRONMENT": "production",
        "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "ANALYSIS_POLL_SECONDS": "0.5",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # Low enough for the throttling tests to reach quickly (each failure costs an Argon2 check); tests
        # that fail logins on purpose pose as their own client address (X-Forwarded-For), not 127.0.0.1.
        "LOGIN_MAX_FAILURES_PER_USERNAME": str(MAX_LOGIN_FAILURES_PER_USERNAME),
        "LOGIN_MAX_FAILURES_PER_ADDRESS": str(MAX_LOGIN_FAILURES_PER_ADDRESS),
        # The tests are the servers' reverse proxy: X-Forwarded-For from loopback names the client they pose as.
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        # Every test registers its own users from 127.0.0.1; the registration limit has a server of its own.
        "REGISTRATIONS_PER_ADDRESS": "1000000",
    }


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server_factory(server_logs: Path, database_url: str) -> Iterator[ServerFactory]:
    """Start servers by name; all are stopped at the end of the session, before the database."""
    started: list[ApiServer] = []

    def start(name: str, env: dict[str, str]) -> ApiServer:
        server = ApiServer(name, env, server_logs).start()
        started.append(server)
        return server

    yield start
    for server in started:  # all at once: each takes a few seconds to drain
        server.begin_stop()
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def model_servers(server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path) -> list[ApiServer]:
    """Two server processes with the session's model on the same database, started together."""
    env = {**server_env, "AUTOENCODER_MODEL_PATH": str(model_dir)}
    servers = [server_factory("api", env), server_factory("second-api", env)]
    return [server.wait_until_up() for server in servers]


@pytest.fixture(scope="session")
def api(model_servers: list[ApiServer]) -> ApiServer:
    """The main server, with the session's model."""
    return model_servers[0]


@pytest.fixture(scope="session")
def second_api(model_servers: list[ApiServer]) -> ApiServer:
    """Another process with the same model and database (a second host, as far as the API knows)."""
    return model_servers[1]


@pytest.fixture(scope="session")
def empty_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-models") / "AutoEncoder"


@pytest.fixture(scope="session")
def no_model_api(server_factory: ServerFactory, server_env: dict[str, str], empty_model_path: Path) -> ApiServer:
    """A server whose model path holds no model, with fallback training off (the default)."""
    env = {**server_env, "AUTOENCODER_MODEL_PATH": str(empty_model_path)}
    return server_factory("no-model-api", env).wait_until_up()


@pytest.fixture(scope="session")
def fallback_api(server_factory: ServerFactory, server_env: dict[str, str], empty_model_path: Path) -> ApiServer:
    """A server without a model that trains on each upload (few epochs, short lease for takeover tests)."""
    env = {
        **server_env,
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
        "AUTOENCODER_FALLBACK_TRAIN": "true",
        "AUTOENCODER_FALLBACK_EPOCHS": "3",
        "ANALYSIS_LEASE_SECONDS": "3",
    }
    return server_factory("fallback-api", env).wait_until_up()


@pytest.fixture(scope="session")
def large_upload_api(server_factory: ServerFactory, server_env: dict[str, str], empty_model_path: Path) -> ApiServer:
    """A server that takes uploads of the default 100 MB (no model: uploads need none), with 2 GB parsers and
    150 MB of storage per user (storing ten 100 MB uploads into the embedded database takes minutes)."""
    env = {
        **server_env,
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
        "MAX_UPLOAD_MB": "100",
        "PARSE_MEMORY_MB": "2048",
        "MAX_STORAGE_MB_PER_USER": "150",
    }
    return server_factory("large-upload-api", env).wait_until_up()


@pytest.fixture(scope="session")
def untrusting_api(server_factory: ServerFactory, server_env: dict[str, str], empty_model_path: Path) -> ApiServer:
    """A server as deployed by default: no proxy trusted (X-Forwarded-For is ignored), registrations limited to
    REGISTRATIONS_PER_ADDRESS's default per address. Its database is its own (the other servers register from
    127.0.0.1 in theirs, counted by the same address); it has no model: what it is for needs none."""
    env = {**server_env, "MONGODB_DB": "untrusting_api_tests", "AUTOENCODER_MODEL_PATH": str(empty_model_path)}
    for variable in ("FORWARDED_ALLOW_IPS", "REGISTRATIONS_PER_ADDRESS"):
        del env[variable]
    return server_factory("untrusting-api", env).wait_until_up()


@pytest.fixture(scope="session")
def export_api(server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path) -> ApiServer:
    """A server with the session's model that prepares one download at a time and takes uploads big enough
    for an export to last seconds."""
    env = {
        **server_env,
        # A database of its own: its job worker serves the session's model, and must not take the analyses that
        # other tests follow in the main servers' logs.
        "MONGODB_DB": "export_tests",
        "AUTOENCODER_MODEL_PATH": str(model_dir),
        "MAX_CONCURRENT_EXPORTS": "1",
        "MAX_UPLOAD_MB": str(EXPORT_MAX_UPLOAD_MB),
    }
    return server_factory("export-api", env).wait_until_up()


@pytest.fixture
def account(api: ApiServer) -> Account:
    """A fresh user of the main server."""
    return register(api)
