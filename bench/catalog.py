"""Named datasets: a name and the spec file it stands for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_DATASETS = Path(__file__).resolve().parents[1] / "datasets"


@dataclass(frozen=True)
class DatasetSource:
    """A dataset a plugin provides: its name, spec file and a one-line description."""

    name: str
    spec_path: Path
    description: str = ""


def builtin_datasets() -> list[DatasetSource]:
    """The datasets shipped in the repository's ``datasets/`` folder."""
    return [
        DatasetSource("toy", REPO_DATASETS / "toy.yaml",
                      "trained toy world: coloured shapes, 4 concept ED-LoRAs, toy CLIP and box classifier"),
        DatasetSource("tiny", REPO_DATASETS / "tiny.yaml", "built-in tiny benchmark (generated offline on first use)"),
        DatasetSource("paper", REPO_DATASETS / "paper.yaml", "LoRA-Composer paper: 16 concepts, 2-5-concept layouts"),
    ]
