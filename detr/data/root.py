"""Where a run's images come from: the configured COCO folder, or the synthetic dataset in the cache."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from detr.config import DataConfig
from detr.data.synthetic import GENERATOR_VERSION, generate_synthetic_coco
from detr.errors import DataError


def cache_dir() -> Path:
    """$DETRDOCTOR_CACHE, else $XDG_CACHE_HOME/detrdoctor, else ~/.cache/detrdoctor."""
    if os.environ.get("DETRDOCTOR_CACHE"):
        return Path(os.environ["DETRDOCTOR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detrdoctor"


def synthetic_key(data_cfg: DataConfig) -> str:
    return (
        f"v{GENERATOR_VERSION}-seed{data_cfg.synthetic_seed}-train{data_cfg.synthetic_train_images}"
        f"-val{data_cfg.synthetic_val_images}-px{data_cfg.synthetic_image_size}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(parent: Path, key: str) -> None:
    """Delete temp folders of this key left by generations that were interrupted (their process is gone)."""
    for tmp in parent.glob(f".tmp-{key}-*"):
        pid = tmp.name.removeprefix(f".tmp-{key}-").split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def synthetic_root(data_cfg: DataConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """The cached synthetic dataset of these synthetic_* settings, generated on first use.

    Generation writes into a temp folder renamed into place at the end, so an interrupted generation is
    never mistaken for a dataset; concurrent generations (e.g. several ranks) keep whichever lands first.
    """
    key = synthetic_key(data_cfg)
    parent = cache_dir() / "synthetic"
    final = parent / key
    if final.is_dir():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent, key)
    tmp = parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_synthetic_coco(
            tmp,
            train_images=data_cfg.synthetic_train_images,
            val_images=data_cfg.synthetic_val_images,
            image_size=data_cfg.synthetic_image_size,
            seed=data_cfg.synthetic_seed,
            progress=progress,
        )
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def dataset_root(data_cfg: DataConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """data_cfg.coco_path (which must exist), or the synthetic dataset when it is empty."""
    if not data_cfg.coco_path:
        return synthetic_root(data_cfg, progress)
    root = Path(data_cfg.coco_path).expanduser()
    if not root.exists():
        raise DataError(
            f"{root}: dataset root not found (expected a folder with train2017/, val2017/ and annotations/)"
        )
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a folder")
    return root
