"""How a trained detector is laid out on disk, written atomically and read back safely.

A model directory holds ``autoencoder.h5`` (Keras weights and architecture) and ``metadata.pkl`` (everything
else, as builtins and numpy arrays only). ``metadata.pkl`` is read with an unpickler that accepts only those
types, so a tampered file is refused before it can run code.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL_FILENAME = "autoencoder.h5"
METADATA_FILENAME = "metadata.pkl"
REPORT_FILENAME = "training_report.png"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

# Exactly the globals a metadata dict of builtins and numpy arrays/scalars pickles to (numpy 1.x and 2.x names).
_ALLOWED_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafeMetadataError(pickle.UnpicklingError):
    """``metadata.pkl`` names a class outside the project's allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafeMetadataError(
            f"Refusing to load {METADATA_FILENAME}: it references {module}.{name}, which this project never "
            "writes. The file may have been tampered with; retrain the model with train_autoencoder_model.py."
        )


def dump_metadata(metadata: dict[str, Any], path: Path) -> None:
    """Write ``metadata`` (builtins and numpy values only) to ``path``."""
    with open(path, "wb") as handle:
        pickle.dump(metadata, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_metadata(path: Path) -> dict[str, Any]:
    """Read ``metadata.pkl`` with the restricted unpickler."""
    metadata = _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    if not isinstance(metadata, dict):
        raise UnsafeMetadataError(f"{path} does not hold a model's metadata: retrain the model.")
    return metadata


def model_files(directory: str | Path) -> tuple[Path, Path]:
    """Return the model and metadata paths in ``directory``, raising ``FileNotFoundError`` naming a missing one."""
    directory = Path(directory)
    model_path, metadata_path = directory / MODEL_FILENAME, directory / METADATA_FILENAME
    for path in (model_path, metadata_path):
        if not path.is_file():
            raise FileNotFoundError(f"No such file or directory: '{path}'")
    return model_path, metadata_path


def model_version(directory: str | Path) -> str:
    """A short content hash of the model files: changes whenever the model is retrained."""
    digest = hashlib.sha256()
    for path in model_files(directory):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def write_atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary folder beside ``directory``, then swap it into place.

    If ``write`` fails or the process dies, ``directory`` keeps its earlier model untouched and the
    temporary folder is removed (or, after a crash, left as an ignorable ``.tmp-`` sibling).
    A symlinked ``directory`` (the seed's versioning flow) keeps its link; its target is replaced.
    """
    target = Path(directory)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(staging)
        _fsync_tree(staging)
        if target.exists():
            _swap_directories(staging, target)
            shutil.rmtree(staging, ignore_errors=True)  # now holds the earlier model
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_directories(first: Path, second: Path) -> None:
    """Exchange two directories in one atomic step (Linux ``renameat2``), else by two quick renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(_AT_FDCWD, bytes(first), _AT_FDCWD, bytes(second), _RENAME_EXCHANGE) == 0:
            return
    except (AttributeError, OSError):
        pass
    retired = first.with_name(first.name + ".old")
    os.replace(second, retired)
    os.replace(first, second)
    os.replace(retired, first)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
