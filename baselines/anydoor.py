"""AnyDoor as an out-of-process baseline: geometry in-process, the model in its own pinned environment.

AnyDoor (ali-vilab/AnyDoor) needs torch 2.0 / pytorch_lightning 1.5 and ~18 GB of VRAM, so it runs as
an external command (``LCBENCH_ANYDOOR_CMD`` or the method parameter ``command``), normally the driver
``baselines/anydoor_driver.py`` started inside the AnyDoor checkout (:func:`documented_command`). Per
box, this module does upstream's ``process_pairs`` geometry (reference crop/expand/pad to 224, target
box expand x1.1, context crop expand [1.5, 3) made square, pad, resize to 512) and ``crop_back``; the
command only runs the model.

Protocol ``lcbench-anydoor/2``: the shell runs ``<command>`` once per method instance (one process per
run, so the model is loaded once) and keeps it running. For each box the bench writes a request JSON
file and sends its absolute path, one per line, on the process's stdin; the process answers each with one JSON
line on stdout: ``{"protocol": "lcbench-anydoor/2", "request": <path>, "ok": true, "output": <png>,
...}`` or ``{..., "ok": false, "error": <text>}``. Lines on stdout that are not such answers are
ignored; stderr goes to a log whose tail is reported on failure. Closing stdin ends the process.

A request holds ``protocol``, ``reference_image`` (224 px RGB PNG: masked object on white, padded
square), ``reference_mask`` (224 px L PNG, 255 = object), ``target_image`` (512 px RGB PNG: the padded
square crop), ``hint_mask`` (512 x 512 float32 ``.npy``: 1 in the box, 0 outside, -1 on padding, as
the demo), ``box_yyxx`` (the box in the 512 px frame, AnyDoor's ``[y1, y2, x1, x2]``), ``steps``,
``guidance_scale``, ``strength``, ``seed`` and ``output`` (where to write the 512 px RGB PNG). The
driver builds the high-frequency collage from the reference with upstream's ``sobel`` at ``box_yyxx``
and samples on the request's optional ``device``, else ``$LCBENCH_ANYDOOR_DEVICE``, else ``cuda`` (as
upstream). The driver's answer (device, model loads, checkpoint, checkout) is recorded per box.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from baselines.inpaint import box_seed, choose_reference, reference_mask, scene_background
from baselines.specs import anydoor as declared
from baselines.specs.anydoor import (  # noqa: F401 - the declarations, re-exported where they were
    DEFAULTS,
    DEVIATIONS,
    DRIVER,
    ENV_COMMAND,
    ENV_DEVICE,
    NAME,
    PROTOCOL,
    documented_command,
    setup_steps,
    unavailable,
)
from bench.boxes import Box, to_xyxy_pixels
from bench.methods import Generation, MethodSpec
from bench.spec import Scene

SIZE = 512
REF_SIZE = 224
YYXX = tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------------
# Upstream geometry (anydoor_datasets/data_utils.py), boxes as (y1, y2, x1, x2)


def box_to_yyxx(box: Box, width: int, height: int) -> YYXX:
    """A canonical box as AnyDoor's ``get_bbox_from_mask`` of its rectangle mask: inclusive last row/column."""
    x0, y0, x1, y1 = to_xyxy_pixels(box, width, height)
    return (y0, y1 - 1, x0, x1 - 1)


def mask_bbox_yyxx(mask: np.ndarray) -> YYXX:
    """Upstream ``get_bbox_from_mask``: first/last rows and columns of the mask; the full image under 10 px."""
    h, w = mask.shape[:2]
    if mask.astype(bool).sum() < 10:
        return (0, h, 0, w)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


def expand_bbox(shape: tuple[int, ...], yyxx: YYXX, ratio: float) -> YYXX:
    """Upstream ``expand_bbox`` with a fixed ratio: grow about the centre, clip to the image."""
    y1, y2, x1, x2 = yyxx
    height, width = shape[:2]
    xc, yc = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    h, w = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    nx1, nx2, ny1, ny2 = int(xc - w * 0.5), int(xc + w * 0.5), int(yc - h * 0.5), int(yc + h * 0.5)
    return (max(0, ny1), min(height, ny2), max(0, nx1), min(width, nx2))


def box_to_square(shape: tuple[int, ...], yyxx: YYXX) -> YYXX:
    """Upstream ``box2squre``: widen the shorter side about the centre, clip to the image."""
    height, width = shape[:2]
    y1, y2, x1, x2 = yyxx
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    h, w = y2 - y1, x2 - x1
    if h >= w:
        x1, x2 = cx - h // 2, cx + h // 2
    else:
        y1, y2 = cy - w // 2, cy + w // 2
    return (max(0, y1), min(height, y2), max(0, x1), min(width, x2))


def pad_to_square(image: np.ndarray, value: float) -> tuple[np.ndarray, int]:
    """Upstream ``pad_to_square`` (non-random): pad the shorter side, half before; returns the image and
    the leading pad."""
    h, w = image.shape[:2]
    if h == w:
        return image, 0
    pad = abs(h - w)
    first = pad // 2
    spec = [(0, 0)] * image.ndim
    spec[1 if h > w else 0] = (first, pad - first)
    return np.pad(image, spec, mode="constant", constant_values=value), first


def prepare_reference(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's reference side: mask onto white, crop to the mask box, expand x1.2, pad square, 224 px."""
    mask = (mask > 0).astype(np.uint8)
    masked = image * mask[..., None] + 255 * (1 - mask[..., None])
    y1, y2, x1, x2 = mask_bbox_yyxx(mask)
    masked, mask = masked[y1:y2, x1:x2], mask[y1:y2, x1:x2]
    h, w = masked.shape[:2]
    big_h, big_w = int(h * 1.2), int(w * 1.2)
    ph, pw = (big_h - h) // 2, (big_w - w) // 2
    masked = np.pad(masked, ((ph, big_h - h - ph), (pw, big_w - w - pw), (0, 0)), constant_values=255)
    mask = np.pad(mask, ((ph, big_h - h - ph), (pw, big_w - w - pw)), constant_values=0)
    masked, _ = pad_to_square(masked.astype(np.uint8), 255)
    mask, _ = pad_to_square(mask * 255, 0)
    ref = np.array(Image.fromarray(masked).resize((REF_SIZE, REF_SIZE), Image.BILINEAR))
    ref_mask = np.array(Image.fromarray(mask.astype(np.uint8)).resize((REF_SIZE, REF_SIZE), Image.BILINEAR))
    return ref, ref_mask


@dataclass(frozen=True)
class TargetCrop:
    """The target side of one AnyDoor call and what ``crop_back`` needs."""

    image: np.ndarray  # [512, 512, 3] uint8, padded square crop
    hint_mask: np.ndarray  # [512, 512] float32: 1 box, 0 outside, -1 padding
    box_yyxx: YYXX  # the box in the 512 frame
    crop_yyxx: YYXX  # the crop window on the canvas
    sizes: tuple[int, int, int, int]  # H1, W1 (crop), H2, W2 (padded)


def prepare_target(canvas: np.ndarray, box_yyxx: YYXX, crop_ratio: float) -> TargetCrop:
    """Upstream's target side: box x1.1, crop x``crop_ratio`` made square, pad, resize to 512."""
    box = expand_bbox(canvas.shape, box_yyxx, 1.1)
    crop = box_to_square(canvas.shape, expand_bbox(canvas.shape, box, crop_ratio))
    cy1, cy2, cx1, cx2 = crop
    image = canvas[cy1:cy2, cx1:cx2]
    by1, by2, bx1, bx2 = box[0] - cy1, box[1] - cy1, box[2] - cx1, box[3] - cx1
    mask = np.zeros(image.shape[:2], np.float32)
    mask[by1:by2, bx1:bx2] = 1.0
    h1, w1 = image.shape[:2]
    image, first = pad_to_square(image, 0)
    mask, _ = pad_to_square(mask, -1)
    h2, w2 = image.shape[:2]
    off_y, off_x = (first, 0) if w1 > h1 else (0, first)
    scale = SIZE / h2
    box512 = tuple(int(round(v * scale)) for v in (by1 + off_y, by2 + off_y, bx1 + off_x, bx2 + off_x))
    image512 = np.array(Image.fromarray(image.astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR))
    mask512 = np.array(Image.fromarray(mask).resize((SIZE, SIZE), Image.NEAREST))
    return TargetCrop(image512, mask512, box512, crop, (h1, w1, h2, w2))  # type: ignore[arg-type]


def crop_back(pred: np.ndarray, canvas: np.ndarray, target: TargetCrop, margin: int = 5) -> np.ndarray:
    """Upstream ``crop_back``: resize the 512 result to the padded crop, unpad, paste inside a margin."""
    h1, w1, h2, w2 = target.sizes
    y1, y2, x1, x2 = target.crop_yyxx
    pred = np.array(Image.fromarray(pred.astype(np.uint8)).resize((w2, h2), Image.BILINEAR))
    if w1 < w2:
        first = (w2 - w1) // 2
        pred = pred[:, first : first + w1]
    elif h1 < h2:
        first = (h2 - h1) // 2
        pred = pred[first : first + h1]
    out = canvas.copy()
    m = margin
    out[y1 + m : y2 - m, x1 + m : x2 - m] = pred[m : h1 - m, m : w1 - m]
    return out


# ----------------------------------------------------------------------------------------------
# The method


class DriverProcess:
    """One running AnyDoor command: request paths in on stdin, one JSON answer line per request on stdout."""

    def __init__(self, command: str):
        self.command = command
        self._log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                text=True, bufsize=1, start_new_session=True,
            )
        except OSError as err:
            self._log.close()
            raise RuntimeError(f"AnyDoor command {command!r} failed to start: {err}") from err
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the process wrote to stderr."""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - limit))
            return self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def _died(self) -> RuntimeError:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"AnyDoor command {self.command!r} exited {code} before answering; "
                            f"stderr: {self.stderr_tail()}")

    def request(self, path: Path, timeout: float) -> dict[str, Any]:
        """Send one request path and wait for its answer (other stdout lines are skipped)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{path}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise self._died() from err
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close(wait=0)
                raise RuntimeError(f"AnyDoor command {self.command!r} gave no answer for {path} within "
                                   f"{timeout:g} s; stderr: {self.stderr_tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise self._died()
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict) and answer.get("protocol") == PROTOCOL and answer.get("request") == str(path):
                return answer

    def close(self, wait: float = 30.0) -> int | None:
        """End the process: close its stdin (the driver exits), kill its process group after ``wait`` s."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            code = self.proc.wait(timeout=wait) if wait > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            code = self.proc.wait()
        self._log.close()
        return code


class AnyDoorMethod:
    """Background from the base model, then one request per box to one long-running AnyDoor process."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = dict(params)
        self.command = str(self.params["command"]).strip() or os.environ.get(ENV_COMMAND, "").strip()
        if not self.command:
            raise RuntimeError(f"method '{NAME}' is not configured: {setup_steps()}")
        self._driver: DriverProcess | None = None
        self._finalizer: weakref.finalize | None = None

    def crop_ratio(self, seed: int) -> float:
        """The context-crop ratio of a box: upstream's randint(15, 30) / 10, seeded, or the fixed parameter."""
        value = self.params["crop_ratio"]
        if value == "seeded":
            return int(np.random.default_rng(seed).integers(15, 30)) / 10
        return float(value)

    def driver(self) -> DriverProcess:
        """The running AnyDoor command, started on first use (and again if it died)."""
        if self._driver is None or not self._driver.alive():
            self.close()
            self._driver = DriverProcess(self.command)
            self._finalizer = weakref.finalize(self, self._driver.close)
        return self._driver

    def close(self) -> None:
        """End the AnyDoor process, if one is running (also done when the method is garbage-collected)."""
        if self._finalizer is not None:
            self._finalizer()
        self._driver, self._finalizer = None, None

    def call(self, request: dict, workdir: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Send one request to the running command; returns the 512 px result and the driver's answer."""
        path = workdir / "request.json"
        path.write_text(json.dumps(request, indent=1))
        driver = self.driver()
        answer = driver.request(path, float(self.params["timeout_s"]))
        output = Path(request["output"])
        if not answer.get("ok") or not output.is_file():
            raise RuntimeError(
                f"AnyDoor command {self.command!r} failed on {path} without writing {output}: "
                f"{answer.get('error', 'no error given')}; stderr: {driver.stderr_tail()}"
            )
        pred = np.array(Image.open(output).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        info = {k: v for k, v in answer.items() if k not in ("protocol", "request", "ok", "output")}
        return pred, info

    def insert(
        self, canvas: np.ndarray, box: Box, ref: np.ndarray, ref_mask: np.ndarray, seed: int, workdir: Path
    ) -> tuple[np.ndarray, dict]:
        """Insert one object into one box of the canvas; returns the new canvas and the call's record."""
        ref224, mask224 = prepare_reference(ref, ref_mask)
        ratio = self.crop_ratio(seed)
        target = prepare_target(canvas, box_to_yyxx(box, canvas.shape[1], canvas.shape[0]), ratio)
        files = {
            "reference_image": workdir / "ref.png",
            "reference_mask": workdir / "ref_mask.png",
            "target_image": workdir / "target.png",
            "hint_mask": workdir / "hint_mask.npy",
        }
        Image.fromarray(ref224).save(files["reference_image"])
        Image.fromarray(mask224).save(files["reference_mask"])
        Image.fromarray(target.image).save(files["target_image"])
        np.save(files["hint_mask"], target.hint_mask)
        request = {
            "protocol": PROTOCOL,
            **{k: str(v) for k, v in files.items()},
            "box_yyxx": list(target.box_yyxx),
            "steps": int(self.params["steps"]),
            "guidance_scale": float(self.params["guidance_scale"]),
            "strength": float(self.params["strength"]),
            "seed": seed,
            "output": str(workdir / "output.png"),
        }
        pred, info = self.call(request, workdir)
        out = crop_back(pred, canvas, target, int(self.params["margin"]))
        record = {"crop_ratio": ratio, "crop_yyxx": list(target.crop_yyxx), "box_yyxx_512": list(target.box_yyxx)}
        return out, {**record, "driver": info}

    def generate(self, scene: Scene, seed: int, ctx: Any) -> Generation:
        """Make the scene's image: background, then one AnyDoor call per box in spec order."""
        background, bg_record = scene_background(scene, seed, ctx, self.params)
        canvas = np.array(background)
        boxes = []
        with tempfile.TemporaryDirectory(prefix="lcbench-anydoor-") as tmp:
            for i, region in enumerate(scene.regions):
                seed_i = box_seed(seed, i)
                ref_path = choose_reference(ctx.reference_images(region.concept), seed_i, self.params["reference"])
                ref = np.array(Image.open(ref_path).convert("RGB"))
                mask, mask_source = reference_mask(ctx, region.concept, ref_path, ref.shape[:2])
                workdir = Path(tmp) / f"box{i}"
                workdir.mkdir()
                canvas, call = self.insert(canvas, region.box, ref, mask, seed_i, workdir)
                boxes.append(
                    {
                        "concept": region.concept,
                        "box": list(region.box),
                        "seed": seed_i,
                        "reference": str(ref_path),
                        "reference_mask": mask_source,
                        **call,
                    }
                )
        record = {
            "method": NAME,
            "command": self.command,
            "protocol": PROTOCOL,
            "background": bg_record,
            "boxes": boxes,
            "order": "spec order",
        }
        return Generation(image=Image.fromarray(canvas), record=record)


def method_spec() -> MethodSpec:
    """The AnyDoor method, made by :class:`AnyDoorMethod`."""
    return declared.method_spec(AnyDoorMethod)
