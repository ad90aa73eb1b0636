"""The shipped datasets (paper.yaml, random.yaml), the asset resolver and the generated tiny assets."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import randomworld.assets as tiny_assets
from bench.assets import AssetError, AssetResolver, format_missing, missing_assets
from bench.seeds import scene_seeds
from bench.spec import load_spec
from randomworld.assets import MARKER_NAME, RANDOM_CONCEPTS, RANDOM_DATASET_VERSION, ensure_random_assets

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
PAPER = DATASETS / "paper.yaml"
TINY = DATASETS / "random.yaml"
Q = ", 4K, high quality, high resolution, best quality"
NEG = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user config, asset env var or user cache leaks into these tests."""
    monkeypatch.delenv("LCBENCH_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------------------------
# paper.yaml


def test_paper_concepts_and_scene_counts() -> None:
    spec = load_spec(PAPER)
    assert spec.name == "paper" and spec.asset_root is None
    assert len(spec.concepts) == 16
    assert {c.id for c in spec.concepts.values() if c.background} == {"pyramid", "rock"}
    assert sum(c.style == "anime" for c in spec.concepts.values()) == 6
    assert spec.concepts["rock"].references == "datasets/data/scenes/real/Wululu/image"
    assert spec.concepts["hermione"].class_name == "woman" and spec.concepts["son"].class_name == "man"
    styles = [s.style for s in spec.scenes.values()]
    assert styles.count("anime") == 9 and styles.count("real") == 13
    for scene in spec.scenes.values():
        expected_size = (1024, 512) if scene.style == "anime" else (1024, 768)
        assert (scene.width, scene.height) == expected_size, scene.id
        assert all(spec.concepts[c].style == scene.style for c in scene.concept_ids), scene.id
    assert spec.base_models == {
        "anime": "experiments/pretrained_models/anything-v4.0",
        "real": "experiments/pretrained_models/chilloutmix",
    }


def test_paper_boxes_match_hand_conversion() -> None:
    spec = load_spec(PAPER)
    hina = spec.scenes["5anime_2"].regions[0]
    assert hina.concept == "hina"
    assert hina.box == pytest.approx((0.0, 61 / 512, 160 / 1024, 1.0), abs=1e-6)
    cat = spec.scenes["5real"].regions[2]  # real [375, 530, 765, 730] of a 1024 x 768 image
    assert cat.concept == "catA"
    assert cat.box == pytest.approx((530 / 1024, 375 / 768, 730 / 1024, 765 / 768), abs=1e-6)
    bengio = spec.scenes["4real"].regions[3]  # [10, 770, 767, 1023]
    assert bengio.box == pytest.approx((770 / 1024, 10 / 768, 1023 / 1024, 767 / 768), abs=1e-6)


def test_paper_boxes_match_their_pixel_comments() -> None:
    """Every box equals its transcribed pixel [top, left, bottom, right] divided by the image size."""
    spec = load_spec(PAPER)
    comments = re.findall(
        r"box: \[[^\]]*\]\s+# pixels \[top, left, bottom, right\] = \[([\d, ]+)\]",
        PAPER.read_text(encoding="utf-8"),
    )
    boxes = [(s, r.box) for s in spec.scenes.values() for r in s.regions]
    assert len(comments) == len(boxes) == 73
    for text, (scene, box) in zip(comments, boxes, strict=True):
        top, left, bottom, right = (int(v) for v in text.split(","))
        hand = (left / scene.width, top / scene.height, right / scene.width, bottom / scene.height)
        assert box == pytest.approx(hand, abs=1e-12), scene.id


def test_paper_prompts_and_seeds() -> None:
    spec = load_spec(PAPER)
    s = spec.scenes["5anime_2"]
    assert s.prompt == "three girls, a boy and a man are walking near a lake" and s.seed == 3251
    assert [r.prompt for r in s.regions][0] == "a <hina1> <hina2>, near a lake"
    assert spec.scenes["3anime"].regions[1].prompt == "a <ai1> <ai2>, holding teddy bear, near a lake"
    assert spec.scenes["potter+hermione+rock_background"].prompt == f"a man and a woman, at<rock1> <rock2>{Q}"
    assert spec.scenes["3real"].regions[0].prompt.startswith("<bengio1> <bengio2>, standing")
    assert spec.scenes["3real"].regions[1].prompt.startswith("a <lecun1> <lecun2>, standing")
    for scene in spec.scenes.values():
        if scene.style == "real":
            assert scene.prompt.endswith(Q) and all(r.prompt.endswith(Q) for r in scene.regions), scene.id
        neg = "dark, low quality, low resolution" if scene.id == "2dog+1cat" else NEG
        assert scene.negative_prompt == neg and all(r.negative_prompt == neg for r in scene.regions), scene.id
    seeds = {sid: sc.seed for sid, sc in spec.scenes.items()}
    assert seeds["4real3"] == 8875 and seeds["2real2"] == seeds["2real3"] == 9023 and seeds["2boys"] == 6738
    backgrounds = {sid: getattr(spec.scene_background(sc), "id", None) for sid, sc in spec.scenes.items()}
    assert (
        backgrounds["5real"] == "rock"
        and backgrounds["potter+hermione+pyramid_background+shake_hands"] == "pyramid"
    )
    assert backgrounds["4real"] is None


def test_paper_image_guidance() -> None:
    spec = load_spec(PAPER)
    guided = {sid for sid, s in spec.scenes.items() if s.image_guidance}
    assert guided == {"4anime", "2boys", "2real2", "5real", "4real2", "4real3"}
    five = spec.scenes["5real"]
    assert five.conditions == {
        "pose": "datasets/validation_spatial_condition/multi-characters/real_pose/5real.png",
        "sketch": "datasets/validation_spatial_condition/multi-characters/real_pose/5real_edge.jpg",
    }
    assert five.adapter_global_weights == {"pose": 0.0, "sketch": 0.0}
    assert [dict(r.adapter_weights) for r in five.regions] == [
        {"pose": 1.0},
        {"sketch": 0.8},
        {"sketch": 0.8},
        {"pose": 1.0},
    ]
    assert spec.scenes["4anime"].conditions["pose"].endswith("anime_pose/4anime.png")


def test_paper_benchmarks_and_seed_schemes() -> None:
    spec = load_spec(PAPER)
    b = spec.benchmarks
    assert (len(b["paper"].scenes), b["paper"].seeds, b["paper"].seed_scheme) == (22, 50, "paper")
    assert (
        all(spec.scenes[s].style == "anime" for s in b["paper-anime"].scenes)
        and len(b["paper-anime"].scenes) == 9
    )
    assert (
        all(spec.scenes[s].style == "real" for s in b["paper-real"].scenes)
        and len(b["paper-real"].scenes) == 13
    )
    assert all(len(spec.scenes[s].regions) >= 4 for s in b["ablation"].scenes)
    scripts = b["paper-scripts"]
    assert scripts.seeds == 1 and scripts.seed_scheme == "offset"
    for sid in scripts.scenes:
        assert scene_seeds(spec.scenes[sid], 1, "offset") == [spec.scenes[sid].seed]


@pytest.mark.parametrize("scene_id", ["5anime_2", "4real3", "2real3"])
def test_paper_fifty_seed_scheme(scene_id: str) -> None:
    scene = load_spec(PAPER).scenes[scene_id]
    state = random.getstate()
    try:
        random.seed(scene.seed)
        expected = [random.randint(1, 20000) for _ in range(50)]
    finally:
        random.setstate(state)
    assert scene_seeds(scene, 50, "paper") == expected


def test_missing_assets_on_empty_root(tmp_path: Path) -> None:
    spec = load_spec(PAPER)
    root = tmp_path / "empty"
    root.mkdir()
    missing = missing_assets(spec, AssetResolver(spec, root))
    by_kind: dict[str, list] = {}
    for m in missing:
        by_kind.setdefault(m.kind, []).append(m)
    assert {m.path for m in by_kind["base_model"]} == {
        str(root / "experiments/pretrained_models/anything-v4.0"),
        str(root / "experiments/pretrained_models/chilloutmix"),
    }
    assert {m.owner for m in by_kind["lora"]} == set(spec.concepts)
    hina = next(m for m in by_kind["lora"] if m.owner == "hina")
    assert hina.field == "concepts[hina].lora" and hina.path == str(root / "loras/anime/edlora_hina.pth")
    assert {m.path for m in by_kind["references"]} == {
        str(root / c.references) for c in spec.concepts.values()
    }
    assert len(by_kind["condition"]) == 7  # 4anime, 2boys, 2real2, 5real (pose + sketch), 4real2, 4real3
    assert set(by_kind) == {"base_model", "lora", "references", "condition"}
    table = format_missing(missing)
    assert table.startswith(f"{len(missing)} missing assets:") and str(root / "loras/real/catA.pth") in table
    # A subset of scenes only needs its own style, concepts (background included) and conditions.
    subset = missing_assets(spec, AssetResolver(spec, root), scene_ids=["5real"])
    assert {m.owner for m in subset if m.kind == "lora"} == {"potter", "dogA", "catA", "hermione", "rock"}
    assert {m.owner for m in subset if m.kind == "base_model"} == {"real"}
    assert {m.field for m in subset if m.kind == "condition"} == {
        "scenes[5real].conditions.pose",
        "scenes[5real].conditions.sketch",
    }


def test_missing_assets_reports_empty_folders_and_bad_model_folders(tmp_path: Path) -> None:
    spec = load_spec(PAPER)
    (tmp_path / "experiments/pretrained_models/chilloutmix").mkdir(parents=True)
    (tmp_path / spec.concepts["catA"].references).mkdir(parents=True)
    refs = tmp_path / spec.concepts["dogA"].references
    refs.mkdir(parents=True)
    (refs / "a.png").write_bytes(b"")
    missing = {(m.owner, m.kind): m for m in missing_assets(spec, AssetResolver(spec, tmp_path), ["5real"])}
    assert missing[("real", "base_model")].problem == "folder without model_index.json"
    assert missing[("catA", "references")].problem == "no images"
    assert missing[("potter", "references")].problem == "missing"
    assert ("dogA", "references") not in missing


def test_resolver_needs_a_root() -> None:
    spec = load_spec(PAPER)
    resolver = AssetResolver(spec)
    with pytest.raises(AssetError, match=r"pass --assets DIR, or set asset_root") as info:
        resolver.lora_path("hina")
    assert str(PAPER) in str(info.value)
    assert resolver.resolve("/abs/file.png") == Path("/abs/file.png")


def test_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(PAPER)
    config = tmp_path / "config" / "lcbench" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"assets:\n  paper: {tmp_path / 'from_config'}\n", encoding="utf-8")
    assert AssetResolver(spec).root == tmp_path / "from_config"
    monkeypatch.setenv("LCBENCH_ASSETS", f"other=/x{__import__('os').pathsep}paper={tmp_path / 'from_env'}")
    assert AssetResolver(spec).root == tmp_path / "from_env"
    assert AssetResolver(spec, tmp_path / "from_flag").root == tmp_path / "from_flag"
    assert (
        AssetResolver(spec, tmp_path / "from_flag").lora_path("catA")
        == tmp_path / "from_flag/loras/real/catA.pth"
    )
    # A bare directory applies to every dataset except those with a built-in root.
    monkeypatch.setenv("LCBENCH_ASSETS", str(tmp_path / "bare"))
    assert AssetResolver(spec).root == tmp_path / "bare"
    tiny = AssetResolver(load_spec(TINY))
    assert tiny.root_ref == "builtin:random"
    config.write_text("assets: [paper]\n", encoding="utf-8")
    monkeypatch.delenv("LCBENCH_ASSETS")
    with pytest.raises(AssetError, match=r"config.yaml: field 'assets'"):
        AssetResolver(spec)


# ----------------------------------------------------------------------------------------------
# Tiny assets


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_assets_are_deterministic_and_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = ensure_random_assets(tmp_path / "a")
    b = ensure_random_assets(tmp_path / "b")
    files_a = _files(a)
    assert files_a == _files(b)
    assert MARKER_NAME in files_a and f'"version": "{RANDOM_DATASET_VERSION}"' in files_a[MARKER_NAME].decode()
    assert sum(name.startswith("loras/") for name in files_a) == len(RANDOM_CONCEPTS)
    # Idempotent: a complete folder is returned as is, without generating anything.
    monkeypatch.setattr(tiny_assets, "_generate", lambda folder: pytest.fail("regenerated a complete folder"))
    assert ensure_random_assets(a) == a and _files(a) == files_a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folders left


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_on_second(folder: Path, concept: tiny_assets.RandomConcept) -> None:
        calls.append(concept.id)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        real_write(folder, concept)

    real_write = tiny_assets._write_references
    monkeypatch.setattr(tiny_assets, "_write_references", fail_on_second)
    root = tmp_path / "tiny"
    with pytest.raises(KeyboardInterrupt):
        ensure_random_assets(root)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tiny_assets, "_write_references", real_write)
    assert (ensure_random_assets(root) / MARKER_NAME).is_file()


def test_tiny_assets_refuse_foreign_folder_and_replace_old_versions(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="without a completion marker"):
        ensure_random_assets(foreign)
    old = tmp_path / "old"
    old.mkdir()
    (old / MARKER_NAME).write_text('{"version": "0"}', encoding="utf-8")
    (old / "stale.bin").write_bytes(b"x")
    ensure_random_assets(old)
    assert not (old / "stale.bin").exists() and (old / "loras").is_dir()


def _raw_edlora(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The file's ``params`` read directly (independent of the bench's LoRA loaders)."""
    if path.suffix == ".safetensors":
        params: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in load_file(path).items():
            _, part, rest = key.split(".", 2)
            params.setdefault(part, {})[rest] = tensor
        return params
    return torch.load(path, weights_only=True)["params"]


def test_tiny_loras_fit_the_tiny_pipeline_and_change_it_visibly(tmp_path: Path) -> None:
    from randomworld.models import build_random_pipeline

    pipe = build_random_pipeline()
    root = ensure_random_assets(tmp_path / "tiny")
    spellings = set()
    for concept in RANDOM_CONCEPTS:
        params = _raw_edlora(root / concept.lora_file)
        assert set(params) == {"new_concept_embedding", "text_encoder", "unet"}
        assert list(params["new_concept_embedding"]) == list(concept.tokens)
        text = pipe.text_encoder.config
        assert all(e.shape == (16, text.hidden_size) for e in params["new_concept_embedding"].values())
        assert len(params["unet"]) == 16 * 2 * 4 * 2  # 16 blocks x attn1/attn2 x q/k/v/out x down/up
        assert len(params["text_encoder"]) == text.num_hidden_layers * 4 * 2
        for part, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
            for key, down in params[part].items():
                if not key.endswith("down.weight"):
                    continue
                spelling = "research" if "_lora.down" in key else "main"
                spellings.add(spelling)
                module_name = key.replace("_lora.down.weight", "").replace(".lora_down.weight", "")
                module_name = module_name.removeprefix("text_model.")
                up = params[part][key.removesuffix("down.weight") + "up.weight"]
                weight = model.get_submodule(module_name).weight
                delta = up @ down
                assert delta.shape == weight.shape, key
                ratio = (delta.norm() / weight.norm()).item()
                assert 0.05 < ratio < 2.0, (key, ratio)
    assert spellings == {"research", "main"}
    suffixes = {Path(c.lora_file).suffix for c in RANDOM_CONCEPTS}
    assert {".pth", ".safetensors"} <= suffixes


def test_tiny_yaml_resolves_every_asset() -> None:
    spec = load_spec(TINY)
    regions = sorted(len(s.regions) for s in spec.scenes.values())
    assert regions == [2, 2, 3, 3, 3]
    assert {(s.height, s.width) for s in spec.scenes.values()} == {(64, 128), (64, 64)}
    assert any(spec.scene_background(s) for s in spec.scenes.values())
    assert spec.benchmarks["default"].seeds == 2 and len(spec.benchmarks["default"].scenes) == 5
    assert set(spec.benchmarks["smoke"].scenes) == {"cat_dog", "girl_boy"}
    assert spec.benchmarks["smoke"].seeds == 1 and len(spec.benchmarks["smoke"].scenes) == 2
    assert {c.id for c in RANDOM_CONCEPTS} == set(spec.concepts)
    resolver = AssetResolver(spec)
    assert missing_assets(spec, resolver) == []
    assert resolver.root.name == f"random-{RANDOM_DATASET_VERSION}" and (resolver.root / MARKER_NAME).is_file()
    assert resolver.base_model_ref("anime") == "builtin:random-sd"
    for cid in spec.concepts:
        assert resolver.lora_path(cid).is_file()
        images = resolver.reference_images(cid)
        assert len(images) >= 3 and images == sorted(images, key=lambda p: p.name)
    assert len(resolver.mask_images("cat")) == len(resolver.reference_images("cat"))
    assert resolver.mask_images("dog") == []
    # One scene with image guidance, laid out like the paper's 5real: pose on the man, sketch on the animals.
    guided = [s for s in spec.scenes.values() if s.image_guidance]
    assert [s.id for s in guided] == [tiny_assets.GUIDED_SCENE]
    scene = guided[0]
    assert scene.adapter_global_weights == {"pose": 0.0, "sketch": 0.0}
    assert {r.concept: dict(r.adapter_weights) for r in scene.regions} == {
        "man": {"pose": 1.0}, "dog": {"sketch": 0.8}, "cat": {"sketch": 0.8}}
    modes = {"pose": "RGB", "sketch": "L"}  # what the 3- and 1-channel built-in adapters read
    for kind, mode in modes.items():
        with Image.open(resolver.condition_image(scene, kind)) as image:
            assert (image.size, image.mode) == ((scene.width, scene.height), mode)
            drawn = image.convert("L").point(lambda v: 255 if v else 0).getbbox()
        # every drawn pixel lies inside the boxes weighted for that kind
        assert drawn is not None
        boxes = [r.box for r in scene.regions if kind in r.adapter_weights]
        x0, y0 = min(b[0] for b in boxes) * scene.width, min(b[1] for b in boxes) * scene.height
        x1, y1 = max(b[2] for b in boxes) * scene.width, max(b[3] for b in boxes) * scene.height
        assert x0 <= drawn[0] and y0 <= drawn[1] and drawn[2] <= x1 and drawn[3] <= y1, (kind, drawn)


def test_scene_concepts_are_regions_then_background() -> None:
    spec = load_spec(TINY)
    assert spec.scene_concepts(spec.scenes["man_dog_cat_castle"]) == ["man", "dog", "cat", "castle"]
    assert spec.scene_concepts(spec.scenes["cat_dog"]) == ["cat", "dog"]
