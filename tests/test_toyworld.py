"""The toy world's generator, grounding loss, ED-LoRA export and classifier geometry (no trained weights needed)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from bench.lora.apply import lora_merged
from bench.lora.formats import load_lora
from bench.tokenizer import build_clip_tokenizer
from toytrain.base import box_masks, grounding_loss, grounding_targets, in_box_mass, word_token_positions
from toytrain.classifier import round_trip
from toytrain.common import diffusion_target, loss_weights
from toytrain.lora import TEXT_TARGETS, UNET_TARGETS, write_edlora
from toyworld.classifier import square_box
from toyworld.concepts import CONCEPTS, sample_concept_image, sample_concept_view
from toyworld.models import (
    SD1_EPSILON,
    ZERO_SNR_V,
    build_text_encoder,
    build_unet,
    load_vae,
    save_weights,
    scheduler,
    stored_schedule,
    unet_metadata,
    weights_path,
)
from toyworld.world import COLOURS, PLAIN_BACKGROUNDS, UPRIGHT, ToyObject, render, sample_image


def test_generation_is_deterministic_per_seed():
    a = [sample_image(np.random.default_rng(3)) for _ in range(2)]
    b = [sample_image(np.random.default_rng(3)) for _ in range(2)]
    assert a[0].caption == b[0].caption
    assert np.array_equal(np.asarray(a[0].image), np.asarray(b[0].image))
    assert a[1].caption == b[1].caption


def test_object_pixels_lie_in_its_box_and_have_its_colour():
    obj = ToyObject("square", "blue", "solid", cx=20, cy=40, radius=10, angle=15)
    pixels = np.asarray(render([obj], "white")).astype(int)
    differs = np.abs(pixels - PLAIN_BACKGROUNDS["white"]).sum(-1) > 60
    ys, xs = np.nonzero(differs)
    x0, y0, x1, y1 = obj.box
    assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1
    centre = pixels[38:43, 18:23].reshape(-1, 3).mean(0)
    assert np.abs(centre - COLOURS["blue"]).max() < 2


def test_caption_words_point_at_their_objects():
    rng = np.random.default_rng(0)
    for _ in range(50):
        item = sample_image(rng)
        words = item.caption.split(" ")
        for index, obj in enumerate(item.objects):
            named = [words[w].rstrip(",") for w, o in item.word_objects.items() if o == index]
            assert named == obj.words()


def test_shape_only_captions_name_each_object_by_its_shape_and_point_at_it():
    rng = np.random.default_rng(0)
    items = [sample_image(rng, shape_only_share=0.5) for _ in range(200)]
    bare = [item for item in items if all(obj.colour not in item.caption.split(" ") for obj in item.objects)]
    assert 70 <= len(bare) <= 130
    for item in bare:
        words = item.caption.split(" ")
        for index, obj in enumerate(item.objects):
            assert [words[w].rstrip(",") for w, o in item.word_objects.items() if o == index] == [obj.shape]


def test_four_object_images_name_and_ground_every_object_and_three_stays_the_default_draw():
    """``max_objects=4``: about a fifth of the images hold four objects, every object is named in the caption
    and gets a grounding slot; the default draws exactly what ``max_objects=3`` draws."""
    tokenizer = build_clip_tokenizer()
    items = [sample_image(np.random.default_rng(seed), UPRIGHT, 0.3, max_objects=4) for seed in range(300)]
    counts = np.bincount([len(item.objects) for item in items], minlength=5)
    assert counts[0] == 0 and 40 <= counts[4] <= 80
    four = [item for item in items if len(item.objects) == 4]
    positions, boxes = grounding_targets(tokenizer, four)
    for item, slots, slot_boxes in zip(four, positions, boxes, strict=True):
        assert len(set(item.word_objects.values())) == 4
        assert int((slots >= 0).sum()) == len(item.word_objects)
        named = {tuple(box.tolist()) for box, slot in zip(slot_boxes, slots, strict=True) if slot >= 0}
        assert named == {tuple(torch.tensor(obj.box).tolist()) for obj in item.objects}
    default = sample_image(np.random.default_rng(7), UPRIGHT, 0.3)
    three = sample_image(np.random.default_rng(7), UPRIGHT, 0.3, max_objects=3)
    assert (default.caption, default.objects) == (three.caption, three.objects)
    with pytest.raises(ValueError, match="max_objects: expected one of"):
        sample_image(np.random.default_rng(0), max_objects=5)


def test_concept_views_with_distractors_name_the_concept_first_and_no_other_object_is_it():
    concept = CONCEPTS["jade"]
    plain = [sample_concept_image(np.random.default_rng(3), concept) for _ in range(2)]
    assert [([obj], bg, caption) for obj, bg, caption in plain] == [
        sample_concept_view(np.random.default_rng(3), concept) for _ in range(2)]
    rng = np.random.default_rng(0)
    views = [sample_concept_view(rng, concept, distractor_share=0.5) for _ in range(200)]
    crowded = [view for view in views if len(view[0]) > 1]
    assert 70 <= len(crowded) <= 130
    assert {len(objects) for objects, _, _ in crowded} == {2, 3}
    for objects, _, caption in crowded:
        assert caption.startswith(f"a {concept.phrase}, a " if len(objects) == 3 else f"a {concept.phrase} and a ")
        assert (objects[0].shape, objects[0].colour, objects[0].texture) == ("square", "green", "dotted")
        for other in objects[1:]:
            assert (other.shape, other.colour) != ("square", "green")
            assert " ".join(other.words()) in caption
            assert other.angle == 0.0
        for first, second in itertools.combinations(objects, 2):
            assert math.hypot(first.cx - second.cx, first.cy - second.cy) > first.radius + second.radius


def test_disjoint_distractors_share_neither_shape_nor_colour_with_the_concept():
    """`distractors="disjoint"`: no other object has the concept's shape or its colour; the default ("differ")
    lets one share either (never both); an unknown kind is refused, naming the expected ones."""
    concept = CONCEPTS["ruby"]
    kinds = {}
    for kind in ("differ", "disjoint"):
        rng = np.random.default_rng(1)
        views = [sample_concept_view(rng, concept, 1.0, kind) for _ in range(150)]
        kinds[kind] = [(other.shape, other.colour) for objects, _, _ in views for other in objects[1:]]
    assert ("circle", "red") not in kinds["differ"]
    assert any(shape == "circle" for shape, _ in kinds["differ"]) and any(c == "red" for _, c in kinds["differ"])
    assert kinds["disjoint"] and all(shape != "circle" and colour != "red" for shape, colour in kinds["disjoint"])
    with pytest.raises(ValueError, match=r"distractors: expected one of \('differ', 'disjoint'\), got 'near'"):
        sample_concept_view(np.random.default_rng(0), concept, 0.5, "near")


def test_among_others_view_sizes_shrink_only_the_views_that_show_the_concept_alone():
    """`sizes="among-others"`: a view showing the concept alone has a radius of 9-14 px (the world's objects beside
    others) instead of 10-19; it draws the same random numbers, so a seed gives the same backgrounds, captions
    and views with other objects as the default; an unknown size range is refused, naming the expected ones."""
    concept = CONCEPTS["amber"]
    views = {}
    for sizes in ("alone", "among-others"):
        rng = np.random.default_rng(4)
        views[sizes] = [sample_concept_view(rng, concept, 0.5, sizes=sizes) for _ in range(300)]
    radii = {sizes: [objects[0].radius for objects, _, _ in found if len(objects) == 1]
             for sizes, found in views.items()}
    assert min(radii["alone"]) >= 10.0 and max(radii["alone"]) > 17.0
    assert min(radii["among-others"]) >= 9.0 and max(radii["among-others"]) <= 14.0
    assert len(radii["alone"]) == len(radii["among-others"]) > 100
    for default, smaller in zip(views["alone"], views["among-others"], strict=True):
        assert default[1:] == smaller[1:]
        if len(default[0]) > 1:
            assert default[0] == smaller[0]
    with pytest.raises(ValueError, match=r"sizes: expected one of \('alone', 'among-others'\), got 'tiny'"):
        sample_concept_view(np.random.default_rng(0), concept, 0.0, sizes="tiny")


def test_word_positions_match_the_tokenized_caption():
    tokenizer = build_clip_tokenizer()
    item = sample_image(np.random.default_rng(5))
    while len(item.objects) < 3:
        item = sample_image(np.random.default_rng(len(item.caption)))
    words = item.caption.split(" ")
    ids = tokenizer(item.caption).input_ids
    for word, positions in zip(words, word_token_positions(tokenizer, words), strict=True):
        assert ids[positions[0] : positions[-1] + 1] == tokenizer(word, add_special_tokens=False).input_ids
    positions, boxes = grounding_targets(tokenizer, [item])
    first_word = min(item.word_objects)
    assert int(positions[0, 0]) == word_token_positions(tokenizer, words)[first_word][0]
    assert tuple(boxes[0, 0].tolist()) == pytest.approx(item.objects[item.word_objects[first_word]].box)


def test_box_masks_cover_the_cells_a_box_overlaps():
    mask = box_masks(torch.tensor([[8.0, 0.0, 24.0, 9.0]]), resolution=8).view(8, 8)
    expected = torch.zeros(8, 8)
    expected[0:2, 1:3] = 1  # cells are 8 px: x 8..24 -> columns 1, 2; y 0..9 -> rows 0, 1
    assert torch.equal(mask, expected)


def test_grounding_loss_matches_a_hand_computation():
    class Recorded:
        probs = torch.zeros(1, 4, 77)

    recorded = Recorded()
    recorded.probs[0, :, 5] = torch.tensor([0.6, 0.2, 0.1, 0.1])  # token 5's map over a 2x2 grid
    positions = torch.tensor([[5, -1]])
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 0.0, 0.0]])[None]  # top-left cell of 64 px
    loss = grounding_loss([(2, recorded)], positions, boxes, keep=torch.tensor([True]))
    assert float(loss) == pytest.approx((1 - 0.6) ** 2)
    dropped = grounding_loss([(2, recorded)], positions, boxes, keep=torch.tensor([False]))
    assert float(dropped) == 0.0


def test_attention_spread_evenly_puts_the_boxs_share_of_the_grid_in_the_box():
    probs = torch.full((1, 16, 77), 1 / 77)  # every cell of a 4x4 grid attends alike
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 48.0]]])  # 64 px image: 2 columns x 3 rows of 16 px cells
    mass = in_box_mass(probs, torch.tensor([[7]]), boxes, resolution=4)
    assert float(mass) == pytest.approx(6 / 16)


def test_edlora_export_matches_peft(tmp_path):
    torch.manual_seed(0)
    unet, text_encoder = build_unet().eval(), build_text_encoder().eval()
    base_unet, base_text = build_unet().eval(), build_text_encoder().eval()
    base_unet.load_state_dict(unet.state_dict())
    base_text.load_state_dict(text_encoder.state_dict())
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=UNET_TARGETS), unet)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=TEXT_TARGETS), text_encoder)
    with torch.no_grad():
        for name, p in [*unet.named_parameters(), *text_encoder.named_parameters()]:
            if "lora_B" in name:
                p.normal_(0, 0.2)
    concept = CONCEPTS["ruby"]
    tokens = {t: torch.randn(7, 64) for t in concept.tokens}
    path = tmp_path / "ruby.safetensors"
    write_edlora(path, tokens, text_encoder, unet)
    lora = load_lora(path)
    assert lora.format == "edlora" and set(lora.token_embeddings) == set(concept.tokens)
    ids = build_clip_tokenizer()(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents, hidden = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 64)
    with torch.no_grad():
        expected_text = text_encoder(ids)[0]
        expected_noise = unet(latents, 10, encoder_hidden_states=hidden).sample
        with lora_merged(base_unet, base_text, [lora], [1.0]):
            got_text = base_text(ids)[0]
            got_noise = base_unet(latents, 10, encoder_hidden_states=hidden).sample
        plain_noise = base_unet(latents, 10, encoder_hidden_states=hidden).sample
    torch.testing.assert_close(got_text, expected_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_noise, expected_noise, atol=1e-4, rtol=1e-4)
    assert (plain_noise - expected_noise).abs().max() > 1e-3  # the LoRA really changes the output


def test_square_box_is_centred_and_kept_inside_the_image():
    assert square_box((10, 20, 30, 30), 64, 64) == (10, 15, 30, 35)
    assert square_box((50, 50, 70, 64), 64, 64) == (44, 44, 64, 64)
    assert square_box((0, 0, 100, 20), 64, 64) == (0, 0, 64, 64)


def test_training_schedule_reaches_zero_snr_and_its_targets_match_a_hand_computation():
    """The world trains on v-prediction with zero terminal SNR: the last step holds no trace of the latent,
    the target is v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho), and only low-noise steps are down-weighted."""
    schedule = scheduler(ZERO_SNR_V)
    alphas = schedule.alphas_cumprod
    assert float(alphas[-1]) == 0.0 and float(alphas[0]) > 0.99
    latents, noise = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
    t = torch.tensor([0, 500, 999])
    a = alphas[t].view(-1, 1, 1, 1)
    expected = a.sqrt() * noise - (1 - a).sqrt() * latents
    torch.testing.assert_close(diffusion_target(schedule, latents, noise, t), expected)
    snr = alphas[t] / (1 - alphas[t])
    torch.testing.assert_close(loss_weights(schedule, t, 5.0), torch.stack([6 / (snr[0] + 1), torch.tensor(1.0),
                                                                            torch.tensor(1.0)]))
    epsilon = scheduler(SD1_EPSILON)
    torch.testing.assert_close(diffusion_target(epsilon, latents, noise, t), noise)
    eps_snr = epsilon.alphas_cumprod[t] / (1 - epsilon.alphas_cumprod[t])
    torch.testing.assert_close(loss_weights(epsilon, t, 5.0), eps_snr.clamp(max=5) / eps_snr)


def test_a_pipeline_samples_with_the_schedule_its_unet_was_trained_on(tmp_path):
    """The schedule is stored in the UNet file: new weights load as v-prediction, files without it as SD1.x epsilon."""
    unet = build_unet()
    save_weights(unet, weights_path("unet", tmp_path), unet_metadata(unet, ZERO_SNR_V))
    save_weights(unet, weights_path("unet", tmp_path / "old"), {"config": json.dumps(dict(unet.config))})
    assert stored_schedule(weights_path("unet", tmp_path)) == ZERO_SNR_V
    assert stored_schedule(weights_path("unet", tmp_path / "old")) == SD1_EPSILON
    new = scheduler(stored_schedule(weights_path("unet", tmp_path)))
    assert new.config.prediction_type == "v_prediction" and new.config.timestep_spacing == "trailing"
    new.set_timesteps(25)
    assert int(new.timesteps[0]) == 999  # sampling starts where the training schedule has zero SNR
    old = scheduler(stored_schedule(weights_path("unet", tmp_path / "old")))
    assert old.config.prediction_type == "epsilon" and old.config.steps_offset == 1


def test_background_check_reads_the_border_not_the_object():
    """A red square filling the middle of a white canvas has a white background, not a grey or black one."""
    from toytrain.gates import background_right

    image = render([ToyObject("square", "red", "solid", 32, 32, 20)], "white")
    assert background_right(image, "white")
    assert not background_right(image, "gray") and not background_right(image, "black")
    assert background_right(render([], "gray"), "gray") and not background_right(render([], "gray"), "white")


def test_foreground_box_ignores_the_decoders_edge_lines():
    """The toy VAE's decoder brightens or darkens the outermost rows and columns of a plain background past the
    foreground threshold; the box is still the object's (within 2 px of its drawn extent), not the canvas corner."""
    from toyworld.classifier import foreground_box

    triangle = ToyObject("triangle", "red", "solid", 26, 30, 12)
    image = render([triangle], "white")
    clean = foreground_box(image)
    pixels = np.asarray(image).copy()
    pixels[-1, :] = pixels[20:, -1] = (200, 200, 200)
    pixels[0, 5] = (0, 0, 0)
    assert foreground_box(Image.fromarray(pixels)) == clean
    decoded_image = to_pil_image(round_trip(load_vae().eval(), pil_to_tensor(image)[None])[0])
    edges = np.abs(np.asarray(decoded_image, dtype=int)[[0, -1]] - 238).sum(-1).max()
    assert edges > 60  # the artefact this guards against is there
    assert np.abs(np.subtract(foreground_box(decoded_image), clean)).max() <= 2
    assert clean[2] < 40 and clean[3] < 40


def test_word_head_labels_each_object_word_and_ignores_the_rest():
    """The word head reads the object words at their token positions: labels by hand for 'a red striped circle
    and a blue square', -1 for empty slots; a dropped caption adds nothing to the loss."""
    from toytrain.base import MAX_WORDS, WordHead, word_loss

    tokenizer = build_clip_tokenizer()
    item = sample_image(np.random.default_rng(0))
    item.objects = [ToyObject("circle", "red", "striped", 20, 20, 10), ToyObject("square", "blue", "solid", 45, 45, 9)]
    item.caption = "a red striped circle and a blue square"
    item.word_objects = {1: 0, 2: 0, 3: 0, 6: 1, 7: 1}
    positions, _ = grounding_targets(tokenizer, [item])
    ids = tokenizer([item.caption], padding="max_length", max_length=77, return_tensors="pt").input_ids
    head = WordHead(tokenizer, 64)
    words = [*COLOURS, "striped", "dotted", "circle", "square", "triangle", "cross"]
    logits, labels = head(torch.randn(1, 77, 64), ids, positions)
    expected = [words.index(w) for w in ("red", "striped", "circle", "blue", "square")]
    assert labels[0].tolist() == expected + [-1] * (MAX_WORDS - len(expected))
    assert logits.shape == (1, MAX_WORDS, len(words)) and float(logits.detach().abs().max()) <= 10.0 + 1e-4
    assert float(word_loss(head, torch.randn(1, 77, 64), ids, positions, torch.tensor([False]))) == 0.0
    assert float(word_loss(head, torch.randn(1, 77, 64), ids, positions, torch.tensor([True])).detach()) > 0.0
