"""Out-of-process methods: a method implemented by a command in its own environment (any code base).

Protocol: for each item the bench writes a request JSON file and runs ``COMMAND... REQUEST.json``.
The request holds the scene (canonical boxes), the seed, the concepts with absolute paths of their
LoRA and reference images, the base model reference, and two output paths. The command must write
a PNG to ``output_image`` and a JSON object to ``output_record`` (the parameters it really used),
then exit 0. Anything else is a failed item with the command's stderr in the record.

External methods are declared in a YAML file named by ``LCBENCH_EXTERNAL_METHODS`` (or
``~/.config/lcbench/external.yaml``)::

    methods:
      - name: anydoor-cli
        command: ["/opt/anydoor/env/bin/python", "/opt/anydoor/bench_entry.py"]
        description: AnyDoor in its own environment
        timeout: 600
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from PIL import Image

from bench.methods import Generation, MethodSpec
from bench.spec import Scene

if TYPE_CHECKING:
    from bench.context import RunContext

ENV_CONFIG = "LCBENCH_EXTERNAL_METHODS"
DEFAULT_CONFIG = Path("~/.config/lcbench/external.yaml")


class ExternalMethodError(RuntimeError):
    """The external command failed or broke the protocol."""


def build_request(scene: Scene, seed: int, ctx: RunContext, output_dir: Path) -> dict[str, Any]:
    """The JSON request for one item (absolute paths only, so the command may run anywhere)."""
    concepts = {}
    for cid in dict.fromkeys(scene.concept_ids):
        concept = ctx.concept(cid)
        concepts[cid] = dict(
            asdict(concept),
            lora=str(ctx.assets.lora_path(cid)),
            references=[str(p) for p in ctx.reference_images(cid)],
        )
    scene_plain = asdict(scene)
    scene_plain["regions"] = [dict(asdict(r), box=list(r.box)) for r in scene.regions]
    return {
        "protocol": "lcbench-external/1",
        "scene": scene_plain,
        "seed": seed,
        "concepts": concepts,
        "base_model": ctx.assets.base_model_ref(scene.style),
        "output_image": str(output_dir / "image.png"),
        "output_record": str(output_dir / "record.json"),
    }


class ExternalMethod:
    """Runs one item by calling the configured command with a request file."""

    def __init__(self, name: str, command: Sequence[str], timeout: float, env: Mapping[str, str] | None = None):
        self.name, self.command, self.timeout = name, list(command), timeout
        self.env = dict(env or {})

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Write the request, run the command, read back the image and record."""
        with tempfile.TemporaryDirectory(prefix="lcbench-ext-") as tmp:
            out = Path(tmp)
            request = build_request(scene, seed, ctx, out)
            request_path = out / "request.json"
            request_path.write_text(json.dumps(request, indent=2), encoding="utf-8")
            try:
                done = subprocess.run(
                    [*self.command, str(request_path)],
                    capture_output=True,
                    text=True,
                    timeout=self.timeout,
                    env={**os.environ, **self.env},
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise ExternalMethodError(f"external method '{self.name}': {err}") from err
            if done.returncode != 0:
                raise ExternalMethodError(
                    f"external method '{self.name}' exited {done.returncode}: {done.stderr.strip()[-2000:]}"
                )
            image_path, record_path = Path(request["output_image"]), Path(request["output_record"])
            if not image_path.is_file() or not record_path.is_file():
                raise ExternalMethodError(
                    f"external method '{self.name}' exited 0 but did not write {image_path.name} and "
                    f"{record_path.name} as the protocol requires"
                )
            with Image.open(image_path) as img:
                image = img.convert("RGB")
            record = json.loads(record_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ExternalMethodError(f"external method '{self.name}': output_record must hold a JSON object")
        return Generation(image=image, record={"external": record, "command": self.command})


def external_method_spec(
    name: str,
    command: Sequence[str],
    description: str = "",
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> MethodSpec:
    """A MethodSpec for a command that follows the protocol (use it from a plugin file)."""
    return MethodSpec(
        name=name,
        description=description or f"external command {' '.join(command)}",
        create=lambda params: ExternalMethod(name, command, timeout, env),
        defaults={},
        deviations=("runs out of process through the lcbench-external/1 protocol",),
    )


def configured_methods() -> list[MethodSpec]:
    """External methods declared in the YAML file named by LCBENCH_EXTERNAL_METHODS (or the default path)."""
    path = Path(os.environ.get(ENV_CONFIG, str(DEFAULT_CONFIG))).expanduser()
    if not path.is_file():
        if ENV_CONFIG in os.environ:
            raise ExternalMethodError(f"{ENV_CONFIG}: '{path}' does not exist; expected a YAML file with 'methods:'")
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    specs = []
    for i, entry in enumerate(data.get("methods", [])):
        where = f"{path}: methods[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ExternalMethodError(f"{where}.name: expected a method name string")
        command = entry.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise ExternalMethodError(f"{where}.command: expected a non-empty list of strings")
        specs.append(
            external_method_spec(
                entry["name"], command, entry.get("description", ""), float(entry.get("timeout", 600)),
                entry.get("env"),
            )
        )
    return specs
