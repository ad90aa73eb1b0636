"""Paint-by-Example baseline and the shared sequential-inpainting protocol, on tiny models."""

from __future__ import annotations

from pathlib import Path

import diffusers
import numpy as np
import pytest
from PIL import Image

from baselines import paint_by_example as pbe
from baselines.inpaint import class_word_prompt, crop_window, paste_back, reference_example, subject_box
from baselines.specs import paint_by_example as declared
from bench.boxes import to_xyxy_pixels
from bench.catalog import load_dataset
from bench.pipelines import load_base_model
from bench.spec import DatasetSpec, load_spec
from randomworld.inpainting import build_random_pbe

SPEC = """
name: tiny-g
base_models: {real: "builtin:random-sd"}
concepts:
  - {id: dogA, class_name: dog, style: real, tokens: "<dogA1> <dogA2>", lora: none, references: refs/dogA,
     masks: masks/dogA}
  - {id: dogB, class_name: dog, style: real, tokens: "<dogB1> <dogB2>", lora: none, references: refs/dogB}
scenes:
  - id: two-dogs
    prompt: "<dogA1> <dogA2> and <dogB1> <dogB2> on the grass"
    width: 128
    height: 64
    regions:
      - {concept: dogA, box: [0.05, 0.2, 0.4, 0.9], prompt: "a <dogA1> <dogA2>"}
      - {concept: dogB, box: [0.55, 0.1, 0.95, 0.8], prompt: "a <dogB1> <dogB2>"}
benchmarks:
  - {id: tiny, scenes: all, seeds: 1}
"""


class FakeContext:
    """The parts of bench.context.RunContext the baselines use, resolving assets next to the spec."""

    def __init__(self, spec: DatasetSpec, cache_dir: Path):
        import torch

        self.spec, self.device, self.dtype, self.cache_dir = (
            spec,
            torch.device("cpu"),
            torch.float32,
            cache_dir,
        )
        self._pipes: dict = {}

    def base_pipeline(self, style: str):
        if style not in self._pipes:
            self._pipes[style] = load_base_model(self.spec.base_models[style])
        return self._pipes[style]

    def concept(self, concept_id: str):
        return self.spec.concepts[concept_id]

    def model(self, ref: str, kind: str, where: str = "", **options):
        from bench.models import create

        if (kind, ref) not in self._pipes:
            self._pipes[(kind, ref)] = create(ref, kind, where=where, dtype=self.dtype, **options)
        return self._pipes[(kind, ref)]

    def reference_images(self, concept_id: str) -> list[Path]:
        return sorted((self.spec.path.parent / self.spec.concepts[concept_id].references).glob("*.png"))


def make_tiny_bench(root: Path) -> FakeContext:
    """Write the tiny spec, two reference images (and masks for dogA) per concept, and return a context."""
    (root / "spec.yaml").write_text(SPEC)
    rng = np.random.default_rng(0)
    for cid, color in (("dogA", (200, 60, 40)), ("dogB", (40, 80, 210))):
        (root / "refs" / cid).mkdir(parents=True)
        (root / "masks" / cid).mkdir(parents=True)
        for k in range(2):
            img = np.full((48, 40, 3), 255, np.uint8)
            img[8:40, 6:30] = np.array(color) + rng.integers(0, 30, (32, 24, 3))
            Image.fromarray(img).save(root / "refs" / cid / f"{k}.png")
            mask = np.zeros((48, 40), np.uint8)
            mask[8:40, 6:30] = 255
            if cid == "dogA":
                Image.fromarray(mask).save(root / "masks" / cid / f"{k}.png")
    return FakeContext(load_spec(root / "spec.yaml"), root / "cache")


FAST = {"steps": 2, "background_steps": 2, "crop_size": 64}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> FakeContext:
    return make_tiny_bench(tmp_path_factory.mktemp("tiny"))


def test_deprecated_module_is_pinned_and_importable() -> None:
    major, minor = (int(v) for v in diffusers.__version__.split(".")[:2])
    assert (major, minor) == (0, 42), (
        "PaintByExamplePipeline is deprecated: re-check it before moving the pin"
    )
    assert pbe.PaintByExamplePipeline.__module__.startswith("diffusers.pipelines.deprecated.paint_by_example")
    assert pbe.unavailable() is None


def test_class_word_prompt(ctx: FakeContext) -> None:
    scene = ctx.spec.scenes["two-dogs"]
    assert class_word_prompt(scene.prompt, ctx.spec) == "dog and dog on the grass"
    assert class_word_prompt(scene.prompt, ctx.spec, "remove") == "on the grass"


def test_crop_window_square_inside_canvas() -> None:
    w = crop_window((0.05, 0.2, 0.4, 0.9), 128, 64, "crop", expand=2.0, size=64)
    assert (w.x0, w.y0, w.x1, w.y1) == (0, 0, 64, 64)  # 45 x 45 box -> 90 -> clipped to the 64-px canvas side
    assert (w.work_w, w.work_h) == (64, 64)
    w = crop_window((0.5, 0.5, 0.6, 0.6), 200, 100, "crop", expand=1.5, size=64)
    assert (w.x1 - w.x0, w.y1 - w.y0) == (30, 30) and (w.x0, w.y0) == (95, 40)


def test_paste_back_inside_box_only() -> None:
    canvas = Image.new("RGB", (32, 16), (10, 20, 30))
    window = crop_window((0.25, 0.25, 0.5, 0.75), 32, 16, "full")
    out = np.array(
        paste_back(canvas, Image.new("RGB", (32, 16), (255, 0, 0)), window, (0.25, 0.25, 0.5, 0.75), True)
    )
    changed = np.any(out != (10, 20, 30), axis=-1)
    expected = np.zeros((16, 32), bool)
    expected[4:12, 8:16] = True
    assert np.array_equal(changed, expected)


@pytest.fixture(scope="module")
def background(ctx: FakeContext) -> np.ndarray:
    method = pbe.PaintByExampleMethod(pbe.method_spec().resolve_params(FAST))
    return np.array(method.background(ctx.spec.scenes["two-dogs"], 7, ctx)[0])


def _inside_boxes(scene, shape: tuple[int, ...]) -> np.ndarray:
    inside = np.zeros(shape[:2], bool)
    for x0, y0, x1, y1 in (to_xyxy_pixels(r.box, scene.width, scene.height) for r in scene.regions):
        inside[y0:y1, x0:x1] = True
    return inside


@pytest.mark.parametrize("mode", ["crop", "full"])
def test_generates_and_keeps_outside_pixels(ctx: FakeContext, background: np.ndarray, mode: str) -> None:
    spec = pbe.method_spec()
    method = spec.create(spec.resolve_params({**FAST, "mode": mode}))
    scene = ctx.spec.scenes["two-dogs"]
    gen = method.generate(scene, 7, ctx)
    assert gen.image.size == (128, 64)
    out = np.array(gen.image)
    inside = _inside_boxes(scene, out.shape)
    assert np.array_equal(out[~inside], background[~inside])
    assert np.abs(out[inside].astype(int) - background[inside]).mean() > 1.0  # the boxes were repainted
    assert gen.record["model"] == pbe.RANDOM_MODEL and len(gen.record["boxes"]) == 2
    assert gen.record["background"]["prompt"] == "dog and dog on the grass"
    assert gen.record["boxes"][0]["reference"].endswith(f"{(7 + 1000) % 2}.png")
    assert "deviations" not in gen.record and pbe.method_spec().deviations  # the runner writes them
    # dogA has masks: its reference is cropped to the mask's subject box (widened by 10 px: here the whole
    # 40 x 48 image); dogB has none: the whole image, said so
    dog_a, dog_b = (box["reference_crop"] for box in gen.record["boxes"])
    assert dog_a["rule"] == "mask" and dog_a["mask"].endswith("masks/dogA/1.png")
    assert dog_a["box_xyxy"] == [0, 0, 40, 48]
    assert dog_b["mask"] == "full image (no mask found)"


def test_window_paste_replaces_the_whole_window(ctx: FakeContext, background: np.ndarray) -> None:
    method = pbe.PaintByExampleMethod(pbe.method_spec().resolve_params({**FAST, "paste_inside_box": False}))
    pipe, _ = method.pipeline(ctx, "real")
    box = (0.55, 0.1, 0.95, 0.8)  # px x 70..122, y 6..51: centre x 96 -> 64 x 64 window at x 64..128
    example = Image.open(ctx.reference_images("dogB")[0])
    out, call = method.inpaint_box(pipe, Image.fromarray(background), box, example, 3)
    x0, y0, x1, y1 = call["window_xyxy"]
    assert (x0, y0, x1, y1) == (64, 0, 128, 64)
    out = np.array(out)
    outside_window = np.ones(out.shape[:2], bool)
    outside_window[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside_window], background[outside_window])
    assert not np.array_equal(
        out[:, x0:x1][:, :4], background[:, x0:x1][:, :4]
    )  # window strip left of the box


def _with_base(spec: DatasetSpec, base: str) -> DatasetSpec:
    return DatasetSpec(**{**spec.__dict__, "base_models": {"real": base}})


def test_auto_model_resolves_to_the_inpainting_model_of_the_base_models_world() -> None:
    assert declared.auto_model("builtin:random-sd") == "builtin:random-pbe"  # random weights, for tests
    assert declared.auto_model("builtin:toy-sd") is None  # no toy Paint-by-Example is trained
    assert declared.auto_model("/models/chilloutmix") is None


def test_unavailable_sees_the_parameters_and_the_dataset(ctx: FakeContext, tmp_path: Path) -> None:
    """Today's check ignores the dataset: a real base model without model= failed every image instead."""
    assert pbe.unavailable(pbe.DEFAULTS, ctx.spec) is None  # builtin:random-sd -> builtin:random-pbe
    assert pbe.unavailable(pbe.DEFAULTS) is None  # no dataset chosen: nothing to resolve yet
    real = pbe.unavailable(pbe.DEFAULTS, _with_base(ctx.spec, "experiments/pretrained_models/chilloutmix"))
    assert real is not None and "base_models.real" in real and "model=PATH" in real
    assert "huggingface-cli download Fantasy-Studio/Paint-by-Example" in real and len(real.splitlines()) == 1
    toy = pbe.unavailable(pbe.DEFAULTS, load_dataset("toy"))
    assert toy is not None and toy.startswith("on dataset 'toy': ") and "no builtin:toy-pbe" in toy
    assert f"{pbe.NAME}.model={pbe.RANDOM_MODEL}" in toy  # the way to a smoke run
    assert pbe.unavailable({**pbe.DEFAULTS, "model": pbe.RANDOM_MODEL}, load_dataset("toy")) is None
    missing = pbe.unavailable({**pbe.DEFAULTS, "model": str(tmp_path / "nowhere")}, ctx.spec)
    assert missing is not None and "model_index.json" in missing
    unknown = pbe.unavailable({**pbe.DEFAULTS, "model": "builtin:toy-pbe"}, ctx.spec)
    assert unknown is not None and "unknown built-in 'builtin:toy-pbe'" in unknown
    # a style the method does not run on needs no model: real-only on a spec whose real base is built in
    anime_only = DatasetSpec(**{**ctx.spec.__dict__, "base_models": {"real": "builtin:random-sd",
                                                                     "anime": "/models/anything-v4"}})
    assert pbe.unavailable(pbe.DEFAULTS, anime_only) is None


def test_runs_real_style_scenes_only_unless_asked() -> None:
    """The paper runs the inpainting baselines on real layouts only ('-' in Table 1's anime columns)."""
    spec, paper = pbe.method_spec(), load_dataset("paper")
    skipped = spec.skipped_scenes(spec.defaults, paper, list(paper.scenes))
    assert set(skipped) == {sid for sid, scene in paper.scenes.items() if scene.style == "anime"}
    assert "styles=all" in skipped["3girl"] and "'anime'" in skipped["3girl"]
    assert spec.skipped_scenes(spec.resolve_params({"styles": "all"}), paper, list(paper.scenes)) == {}
    assert spec.skipped_scenes(spec.resolve_params({"styles": "anime"}), paper, ["4real", "3girl"]) == {
        "4real": spec.skip_scene(spec.resolve_params({"styles": "anime"}), paper.scenes["4real"])}
    with pytest.raises(ValueError, match="parameter 'styles': expected 'all' or comma-separated styles"):
        spec.skipped_scenes(spec.resolve_params({"styles": "cartoon"}), paper, ["4real"])


def test_subject_box_widens_the_mask_box_by_ten_pixels_within_the_image() -> None:
    """Paint-by-Example@2eb6e9c ldm/data/open-images.py L134-142: reference = image[bbox widened by
    min(10, room) px on each side]."""
    mask = np.zeros((100, 80), bool)
    mask[30:50, 20:41] = True
    assert subject_box(mask) == (10, 20, 51, 60)
    mask[:] = False
    mask[2:99, 75:80] = True  # near the borders: the widening stops at the image
    assert subject_box(mask) == (65, 0, 80, 100)
    assert subject_box(np.zeros((4, 4), bool)) is None


def test_reference_example_crops_to_the_masks_subject(tmp_path: Path) -> None:
    image = np.full((100, 80, 3), 255, np.uint8)
    image[30:50, 20:41] = (200, 40, 40)
    Image.fromarray(image).save(tmp_path / "a.jpg")
    mask = np.zeros((50, 40), np.uint8)  # half the image's size: resized to it (Mix-of-Show#1)
    mask[15:25, 10:20] = 255
    (tmp_path / "mask").mkdir()
    Image.fromarray(mask).save(tmp_path / "mask" / "a.png")

    class Assets:
        def mask_images(self, concept_id: str) -> list[Path]:
            return [tmp_path / "mask" / "a.png"]

    class Ctx:
        assets = Assets()

    example, record = reference_example(Ctx(), "c", tmp_path / "a.jpg", "mask")
    assert record == {"rule": "mask", "mask": str(tmp_path / "mask" / "a.png"), "box_xyxy": [10, 20, 50, 60]}
    assert example.size == (40, 40)
    whole, record = reference_example(Ctx(), "c", tmp_path / "a.jpg", "none")
    assert whole.size == (80, 100) and record["box_xyxy"] is None
    with pytest.raises(ValueError, match="parameter 'reference_crop': expected 'mask' or 'none'"):
        reference_example(Ctx(), "c", tmp_path / "a.jpg", "bbox")


def test_auto_model_needs_a_path_for_real_base_models(ctx: FakeContext) -> None:
    method = pbe.PaintByExampleMethod(pbe.DEFAULTS)
    ctx_real = FakeContext(ctx.spec, ctx.cache_dir)
    ctx_real.spec = DatasetSpec(**{**ctx.spec.__dict__, "base_models": {"real": "/models/chilloutmix"}})
    with pytest.raises(ValueError, match="model=PATH"):
        method.pipeline(ctx_real, "real")


def test_load_pbe_roundtrip(tmp_path: Path) -> None:
    pipe = build_random_pbe()
    pipe.save_pretrained(tmp_path / "pbe")
    loaded = pbe.load_pbe(tmp_path / "pbe")
    a = pipe.unet.state_dict()["conv_in.weight"]
    assert loaded.unet.state_dict()["conv_in.weight"].equal(a)
    assert type(loaded.scheduler).__name__ == "PNDMScheduler"
    with pytest.raises(ValueError, match="model_index.json"):
        pbe.load_pbe(tmp_path / "missing")
