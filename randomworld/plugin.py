"""Registers the random-weight world: its models through ``bench_models`` and its dataset through ``bench_datasets``."""

from __future__ import annotations

from typing import Any

from bench.catalog import REPO_DATASETS, DatasetSource
from bench.hookspecs import hookimpl
from bench.models import ModelSource

ADAPTER_KINDS = ("sketch", "pose")


def _pipeline(**_: Any) -> Any:
    from randomworld.models import build_random_pipeline

    return build_random_pipeline()


def _adapter(kind: str) -> Any:
    def build(**_: Any) -> Any:
        from randomworld.models import build_random_adapter

        return build_random_adapter(kind)

    return build


def _clip(**_: Any) -> Any:
    from randomworld.encoders import build_random_clip

    return build_random_clip()


def _dino(**_: Any) -> Any:
    from randomworld.encoders import build_random_dino

    return build_random_dino()


def _inpainting(**_: Any) -> Any:
    from randomworld.inpainting import build_random_pbe

    return build_random_pbe()


def _assets(**_: Any) -> Any:
    from bench.cache import default_cache_dir
    from randomworld.assets import RANDOM_DATASET_VERSION, ensure_random_assets

    return ensure_random_assets(default_cache_dir() / f"random-{RANDOM_DATASET_VERSION}")


@hookimpl
def bench_models() -> list[ModelSource]:
    """The random-weight SD1.5-layout pipeline, T2I-Adapters, CLIP, DINO, Paint-by-Example and asset root."""
    random = {"random_weights": True}
    return [
        ModelSource("pipeline", _pipeline, "random-sd", "SD1.5 layout, tiny widths, random weights", **random),
        *(
            ModelSource("adapter", _adapter(kind), f"random-t2i-{kind}", f"{kind} T2I-Adapter for random-sd", **random)
            for kind in ADAPTER_KINDS
        ),
        ModelSource("clip", _clip, "random-clip", "tiny open_clip CLIP, random weights", **random),
        ModelSource("dino", _dino, "random-dino", "tiny DINOv2, random weights", **random),
        ModelSource("inpainting", _inpainting, "random-pbe", "tiny Paint-by-Example, random weights", **random),
        ModelSource("asset_root", _assets, "random", "generated ED-LoRAs and references of its dataset", **random),
    ]


@hookimpl
def bench_datasets() -> list[DatasetSource]:
    """The random-weight dataset (every code path in seconds; images are noise)."""
    return [DatasetSource("random", REPO_DATASETS / "random.yaml", "random-weight models and generated assets: "
                          "images are noise; exercises every code path in seconds")]
