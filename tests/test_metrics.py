"""Metrics: formulas against hand computations, crop geometry, class substitution, resumable scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics_fixtures import FolderReferences, make_run, noise_image

from bench.spec import Concept, load_spec
from metrics.context import ScoreContext
from metrics.crops import GREY, crop_box, reference_view
from metrics.formulas import image_alignment, text_alignment
from metrics.models import ClipEmbedder
from metrics.plugin import builtin_metrics
from metrics.scoring import ScoreError, score_run
from metrics.text import caption, substitute_classes

SPECS = {m.name: m for m in builtin_metrics()}


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# -- formulas ----------------------------------------------------------------------------------------


def test_image_alignment_matches_hand_computation() -> None:
    crops = _unit([[1, 0, 0], [0, 1, 0]])
    refs = _unit([[1, 1, 0], [-1, 0, 0], [0, 0, 1]])
    s = 1 / np.sqrt(2)
    # crop 0 vs refs: cos = s, -1, 0 ; crop 1: s, 0, 0
    all_pairs = image_alignment(crops, refs, "all_pairs")
    assert all_pairs.tolist() == pytest.approx([(s - 1 + 0) / 3, s / 3], abs=1e-6)
    clipped = image_alignment(crops, refs, "all_pairs", clip0=True)
    assert clipped.tolist() == pytest.approx([s / 3, s / 3], abs=1e-6)
    first = image_alignment(crops, refs, "first_ref", scale=1.0, clip0=True)
    assert first.tolist() == pytest.approx([s, s], abs=1e-6)
    with pytest.raises(ValueError, match="pairing"):
        image_alignment(crops, refs, "paired")


def test_text_alignment_official_scale_and_clip() -> None:
    images = _unit([[1, 0], [1, 0], [0, 1]])
    texts = _unit([[1, 1], [-1, 0], [0, 1]])
    assert text_alignment(images, texts).tolist() == pytest.approx([2**-0.5, -1.0, 1.0], abs=1e-6)
    official = text_alignment(images, texts, scale=2.5, clip0=True)
    assert official.tolist() == pytest.approx([2.5 * 2**-0.5, 0.0, 2.5], abs=1e-6)


# -- crops and captions ----------------------------------------------------------------------------


def _columns(width: int = 128, height: int = 64) -> Image.Image:
    grid = np.zeros((height, width, 3), dtype=np.uint8)
    grid[:, :, 0] = np.arange(width, dtype=np.uint8)[None, :]
    grid[:, :, 1] = np.arange(height, dtype=np.uint8)[:, None]
    return Image.fromarray(grid)


def test_crop_geometry_on_a_tall_box() -> None:
    image = _columns()
    box = (0.3, 0.25, 0.55, 1.0)  # x 38.4 -> 38, 70.4 -> 70; y 16 -> 64: 32 wide, 48 tall
    raw = np.asarray(crop_box(image, box, "center_crop"))
    assert raw.shape == (48, 32, 3)
    assert raw[0, 0, 0] == 38 and raw[0, -1, 0] == 69 and raw[0, 0, 1] == 16 and raw[-1, 0, 1] == 63

    padded = np.asarray(crop_box(image, box, "pad_square"))
    assert padded.shape == (48, 48, 3)
    assert (padded[:, :8] == 255).all() and (padded[:, 40:] == 255).all()
    assert np.array_equal(padded[:, 8:40], raw)

    grey = np.asarray(crop_box(image, box, "mask_grey"))
    assert (grey[:, :8] == GREY).all() and np.array_equal(grey[:, 8:40], raw)

    whole = crop_box(image, None, "pad_square")
    assert whole.size == (128, 128)


def test_center_crop_view_keeps_only_the_middle_of_a_tall_box() -> None:
    clip = ClipEmbedder()
    image = _columns()
    tall = crop_box(image, (0.3, 0.25, 0.55, 1.0), "center_crop")  # 32 x 48
    middle = tall.crop((0, 8, 32, 40))  # the square the model's center crop keeps
    assert torch.allclose(
        clip.preprocess(tall), clip.preprocess(middle.resize((64, 64), Image.Resampling.BICUBIC)), atol=0.05
    )
    padded = crop_box(image, (0.3, 0.25, 0.55, 1.0), "pad_square")
    assert not torch.allclose(clip.preprocess(tall), clip.preprocess(padded), atol=0.05)


def test_reference_view_mask_grey_crops_to_the_mask() -> None:
    image = noise_image(3, (40, 20))
    mask = Image.new("L", (40, 20), 0)
    mask.paste(255, (10, 5, 20, 15))  # a 10 x 10 square
    view = np.asarray(reference_view(image, mask, "mask_grey"))
    assert view.shape == (10, 10, 3)
    assert np.array_equal(view, np.asarray(image)[5:15, 10:20])
    unmasked = reference_view(image, None, "mask_grey")
    assert unmasked.size == (40, 40)


def _concept(cid: str, cls: str, tokens: str) -> Concept:
    return Concept(id=cid, class_name=cls, style="real", tokens=tokens, lora="x", references="r")


def test_class_substitution_with_two_token_concepts() -> None:
    concepts = [_concept("catA", "cat", "<catA1> <catA2>"), _concept("dogB", "dog", "<dogB1> <dogB2>")]
    assert substitute_classes("a <catA1> <catA2> next to a <dogB1>  <dogB2>, sunny", concepts) == (
        "a cat next to a dog, sunny"
    )
    assert substitute_classes("<catA1> alone and <dogB2>", concepts) == "cat alone and dog"
    assert caption("<catA1> <catA2> sitting", concepts, "A photo depicts ") == "A photo depicts cat sitting"


# -- scoring a run ----------------------------------------------------------------------------------


class ColourEmbedder:
    """A fixed, hand-computable embedding: the mean RGB of the view, normalised."""

    fingerprint = "colour"
    name = "colour-mean"
    weights = "none"
    preprocess_desc = "none"

    def __init__(self) -> None:
        self.images = 0

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        self.images += len(images)
        rows = [
            np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0) - 127.5 for img in images
        ]
        return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=-1)


def _colour(img: Image.Image) -> np.ndarray:
    v = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0) - 127.5
    return v / np.linalg.norm(v)


def test_clip_i_variants_equal_hand_computation(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    spec = load_spec(tmp_path / "mini.yaml")
    ctx = ScoreContext(spec, FolderReferences(tmp_path))
    ctx._embedders["clip"] = ColourEmbedder()
    image = Image.open(run / "items/m1/real1/000.png").convert("RGB")
    from metrics.api import ScoreItem

    item = ScoreItem("m1", spec.scenes["real1"], 0, 7, image)
    ref_images = {
        c: [Image.open(tmp_path / f"refs/{c}/{n}.png") for n in "abc"] for c in ("catA", "dogB", "park")
    }
    views = {
        ("catA", 0): image.crop((0, 0, 64, 64)),
        ("dogB", 1): image.crop((64, 16, 128, 64)),
        ("park", -1): image,
    }
    default = SPECS["clip_i"].create(SPECS["clip_i"].defaults).score([item], ctx)[0]
    official = SPECS["clip_i@official"].create(SPECS["clip_i@official"].defaults).score([item], ctx)[0]
    assert [(r["concept"], r["region"]) for r in default] == list(views)
    for row_d, row_o, ((concept, _), crop) in zip(default, official, views.items(), strict=True):
        # default: crop and references padded to white squares, raw cosine, mean over all references
        padded = _colour(crop_box(crop, None, "pad_square"))
        cos = [float(padded @ _colour(crop_box(r, None, "pad_square"))) for r in ref_images[concept]]
        assert row_d["value"] == pytest.approx(np.mean(cos), abs=1e-5)
        # official: views as they are, max(cos, 0), only the first reference by sorted name ('a.png')
        first = max(float(_colour(crop) @ _colour(ref_images[concept][0])), 0.0)
        assert row_o["value"] == pytest.approx(first, abs=1e-5)
        assert row_o["value"] != pytest.approx(
            max(np.mean([_colour(crop) @ _colour(r) for r in ref_images[concept]]), 0), abs=1e-4
        )


def test_clip_t_official_equals_direct_open_clip(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    spec = load_spec(tmp_path / "mini.yaml")
    ctx = ScoreContext(spec, FolderReferences(tmp_path))
    metric = SPECS["clip_t@official"].create(SPECS["clip_t@official"].defaults)
    from metrics.api import ScoreItem

    image = Image.open(run / "items/m2/real1/001.png").convert("RGB")
    rows = metric.score([ScoreItem("m2", spec.scenes["real1"], 1, 8, image)], ctx)[0]
    assert [r["caption"] for r in rows] == [
        "A photo depicts cat sitting",
        "A photo depicts a dog running",
        "A photo depicts a cat and a dog in park",
    ]
    clip = ClipEmbedder()  # an independent instance: same seed, same weights
    with torch.no_grad():
        crop = image.crop((64, 16, 128, 64))
        img = clip.model.encode_image(clip.preprocess(crop)[None])
        txt = clip.model.encode_text(clip.tokenizer(["A photo depicts a dog running"]))
        cos = torch.nn.functional.cosine_similarity(img, txt).item()
    assert rows[1]["value"] == pytest.approx(2.5 * max(cos, 0.0), abs=1e-5)


def test_score_run_writes_conventions_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    calls = {"images": 0}
    original = ClipEmbedder.embed_images

    def counting(self: ClipEmbedder, images: list[Image.Image]) -> torch.Tensor:
        calls["images"] += len(images)
        return original(self, images)

    monkeypatch.setattr(ClipEmbedder, "embed_images", counting)
    refs = FolderReferences(tmp_path)
    out = score_run(run, ["clip_i", "clip_t@official"], references=refs, batch_size=3, quiet=True)
    items = sorted((out / "clip_i" / "items").glob("*/*/*.json"))
    assert len(items) == 8  # 2 methods x 2 scenes x 2 seeds; the failed item is skipped
    conventions = json.loads((out / "clip_i" / "conventions.json").read_text())
    assert conventions["model"] == "builtin:random-clip" and conventions["weights"] == "random-init seed 0"
    assert conventions["pairing"].startswith("all_pairs") and conventions["crop_mode"] == "pad_square"
    first = calls["images"]
    # targets: real1 has 3 (two boxes + background), anime1 has 1: 4 per (method, seed), x4, x2 metrics,
    # plus the 9 reference images, embedded once (CLIP-T uses none)
    assert first == 2 * 16 + 9

    calls["images"] = 0
    score_run(run, ["clip_i", "clip_t@official"], references=refs, quiet=True)
    assert calls["images"] == 0  # nothing recomputed, references come from the cache

    stamp = items[0].stat().st_mtime_ns
    items[-1].unlink()
    score_run(run, ["clip_i"], references=refs, quiet=True)
    assert calls["images"] == 3  # only the deleted item (m2/real1/001: three targets); references cached
    assert items[-1].is_file() and items[0].stat().st_mtime_ns == stamp

    with pytest.raises(ScoreError, match="conventions.json: field 'crop_mode'"):
        score_run(
            run,
            ["clip_i"],
            references=refs,
            quiet=True,
            registry={"clip_i": _with_defaults("clip_i", crop_mode="center_crop")},
        )


def _with_defaults(name: str, **changes: object):
    from dataclasses import replace

    return replace(SPECS[name], defaults={**SPECS[name].defaults, **changes})


def test_unknown_metric_and_bad_crop_mode(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(ScoreError, match="expected one of"):
        score_run(run, ["clip-i"], references=FolderReferences(tmp_path), quiet=True)
    with pytest.raises(ValueError, match="crop_mode: expected one of"):
        score_run(
            run,
            ["clip_i"],
            params={"clip_i": {"crop_mode": "square"}},
            references=FolderReferences(tmp_path),
            quiet=True,
        )


def test_dino_metric_scores_with_tiny_model(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = score_run(run, ["dino"], references=FolderReferences(tmp_path), quiet=True)
    rows = json.loads((out / "dino/items/m1/anime1/000.json").read_text())["rows"]
    assert len(rows) == 1 and -1.0 <= rows[0]["value"] <= 1.0
    assert json.loads((out / "dino/conventions.json").read_text())["model"] == "dinov2:builtin:random-dino"
