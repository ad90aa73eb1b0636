"""Named datasets: a name and the spec file it stands for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.spec import DatasetSpec, load_spec

REPO_DATASETS = Path(__file__).resolve().parents[1] / "datasets"


@dataclass(frozen=True)
class DatasetSource:
    """A dataset a plugin provides: its name, spec file and a one-line description."""

    name: str
    spec_path: Path
    description: str = ""


def paper_dataset() -> DatasetSource:
    """The paper's dataset (its assets are the user's: ``bench check-assets --dataset paper``)."""
    return DatasetSource("paper", REPO_DATASETS / "paper.yaml", "LoRA-Composer paper: 16 concepts, 2-5-concept layouts")


class DatasetError(ValueError):
    """A dataset name is neither registered nor a spec file; the message lists the known names."""


def load_dataset(name_or_path: str, pm: Any = None) -> DatasetSpec:
    """A dataset by registered name (from the plugins), or a spec file path."""
    from bench.plugins import plugin_manager, registered_datasets

    datasets: dict[str, DatasetSource] = registered_datasets(pm or plugin_manager())
    if name_or_path in datasets:
        return load_spec(datasets[name_or_path].spec_path)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_spec(path)
    raise DatasetError(f"--dataset: unknown dataset '{name_or_path}'; expected one of {sorted(datasets)} or a "
                       "spec file")
