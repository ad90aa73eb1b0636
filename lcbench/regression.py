"""Reference scores and the regression check: ``bench reference create`` and ``bench check --reference``.

A reference file (JSON, written atomically; by convention under ``reports/reference/<name>.json``)::

    {"format": "lcbench-reference/1",
     "name": "toy-smoke",                       # defaults to the file's stem
     "dataset": "toy",                          # registered dataset name, or a spec file path
     "spec_hash": "0123abcd...",                # DatasetSpec.spec_hash() when the reference was measured
     "benchmark": "smoke" | null, "scenes": ["s1", "s2"],
     "seeds": n, "seed_scheme": "paper",        # n seeds per scene, drawn with the benchmark's seed scheme
     "methods": {"lora-merge": {"steps": 20}},  # method name -> parameter overrides of its defaults
     "metrics": ["clip_i"], "metric_params": {"clip_i": {...}},
     "scoring": {"clip_model": ..., "clip_weights": ..., "dino_model": ...},
     "replicates": R, "k": 3.0, "floor": 0.005,
     "values": {method: {metric: {"value": v, "seed_std": s, "band": [lo, hi], "replicate_values": [...]}}},
     "measured_on": {"machine": ..., "torch": ..., "device": ..., "git": ...},
     "created": "2025-01-01T00:00:00+00:00"}

How the numbers are made. Each scene's seeds are the one sequence ``bench.seeds.scene_seeds`` draws
(seed index 0, 1, 2, ...). Replicate r uses seed indices ``r*n .. r*n+n-1`` of every scene, so
replicate 0 (the first n seeds of each scene) is exactly what ``bench run --seeds n`` makes and what
``bench check`` reruns; replicates 1..R-1 are the same kind of subset on fresh seeds. The reference is
measured as one ordinary run of ``n*R`` seeds per scene, scored with ``bench score``. An image's score is
the mean of its region rows (as in every report table); a replicate's value is the mean of its images'
scores over all scenes.

``value`` is replicate 0's value, ``replicate_values`` all R of them, ``seed_std`` their standard
deviation (ddof=1) and ``band = value ± max(k * seed_std, floor)``. So the band is the measured
seed-to-seed spread of the subset mean, the noise a check on n seeds per scene would see if the
method's code changed its random draws but not its quality; k=3 std units keeps false alarms rare
and the floor (0.005) keeps a band from collapsing to nothing when the replicates happen to agree.
A check on the same code, machine and device reproduces ``value`` exactly (same seeds, CPU noise).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.assets import AssetResolver
from bench.methods import MethodSpec
from bench.runner import MethodRequest, RunSummary, build_manifest, run_benchmark
from bench.spec import SEED_SCHEMES, DatasetSpec, quote_value
from bench.store import atomic_write_json

FORMAT = "lcbench-reference/1"
DEFAULT_K = 3.0
DEFAULT_FLOOR = 0.005


class ReferenceFileError(ValueError):
    """A reference file is unreadable or malformed; the message names the file and the field."""


class CheckError(ValueError):
    """``bench check`` cannot run as asked (a method or parameter not in the reference)."""


@dataclass(frozen=True)
class Measurement:
    """What to run and how to score it: the part a reference and its check share."""

    spec: DatasetSpec
    assets: AssetResolver
    methods: Sequence[MethodRequest]
    scenes: Sequence[str]
    seeds: int
    scheme: str
    benchmark: str | None
    metrics: Sequence[str]
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    scoring: Mapping[str, Any] = field(default_factory=dict)  # clip_model, clip_weights, dino_model
    device: str = "cpu"


@dataclass
class Measured:
    """Replicate values per (method name, metric name); None where a replicate has unscored images."""

    values: dict[str, dict[str, list[float | None]]]
    summary: RunSummary
    manifest: dict[str, Any]  # what this code and machine are now (packages, git revision)


def measure(m: Measurement, replicates: int, work: Path, metric_registry: Mapping[str, Any],
            quiet: bool = False) -> Measured:
    """Run ``seeds * replicates`` seeds per scene into ``work`` (resumable), score them, average per replicate."""
    from metrics.scoring import score_run
    from reports.load import load_scores
    from reports.tables import image_scores

    summary = run_benchmark(m.spec, m.assets, m.methods, m.scenes, m.seeds * replicates, work, scheme=m.scheme,
                            benchmark=m.benchmark, device=m.device, quiet=quiet)
    score_run(work, list(m.metrics), params=m.metric_params, device=m.device, registry=metric_registry,
              quiet=quiet, **m.scoring)
    frame = load_scores([work])
    expected = m.seeds * len(m.scenes)
    values: dict[str, dict[str, list[float | None]]] = {}
    for request in m.methods:
        for name in m.metrics:
            mspec = metric_registry[name]
            metric_key = mspec.key(mspec.resolve_params(m.metric_params.get(name, {})))
            part = frame[(frame["method"] == request.key) & frame["scene"].isin(list(m.scenes))]
            images = image_scores(part, metric_key) if metric_key in set(part["metric"]) else part.iloc[:0]
            per_replicate: list[float | None] = []
            for r in range(replicates):
                chosen = images[(images["index"] >= r * m.seeds) & (images["index"] < (r + 1) * m.seeds)]
                per_replicate.append(float(chosen["value"].mean()) if len(chosen) == expected else None)
            values.setdefault(request.spec.name, {})[name] = per_replicate
    fresh = build_manifest(m.spec, m.assets, m.methods, m.scenes, m.seeds, m.scheme, m.benchmark)
    return Measured(values, summary, fresh)  # a resumed run folder's manifest keeps its first git revision


def band_entry(replicate_values: Sequence[float], k: float, floor: float) -> dict[str, Any]:
    """``value`` (replicate 0), ``seed_std`` (ddof=1) and ``band = value ± max(k * seed_std, floor)``."""
    value = replicate_values[0]
    std = statistics.stdev(replicate_values)
    half = max(k * std, floor)
    return {"value": value, "seed_std": std, "band": [value - half, value + half],
            "replicate_values": list(replicate_values)}


def machine_info(device: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Where the numbers were measured: host, torch version, device (with the GPU's name), git revision."""
    import torch

    device_text = device
    if device.startswith("cuda") and torch.cuda.is_available():
        device_text = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "machine": f"{platform.node()} ({platform.platform()}, {platform.machine()})",
        "torch": (manifest.get("packages") or {}).get("torch"),
        "device": device_text,
        "git": manifest.get("git_revision"),
    }


def create_reference(m: Measurement, name: str, dataset: str, replicates: int, work: Path,
                     metric_registry: Mapping[str, Any], *, k: float = DEFAULT_K, floor: float = DEFAULT_FLOOR,
                     quiet: bool = False) -> dict[str, Any]:
    """Measure every replicate and return the reference (see the module docstring); nothing is written."""
    if replicates < 2:
        raise ValueError(f"--replicates: expected an integer >= 2 (a spread needs two replicates), got {replicates}")
    measured = measure(m, replicates, work, metric_registry, quiet=quiet)
    incomplete = [f"{method}/{metric}" for method, per in measured.values.items() for metric, vals in per.items()
                  if any(v is None for v in vals)]
    if incomplete:
        failures = "".join(f"\n  failed: {f}" for f in measured.summary.failures[:10])
        raise RuntimeError(f"{work}: some images failed or were not scored for {', '.join(incomplete)}; "
                           f"no reference was written{failures}")
    return {
        "format": FORMAT,
        "name": name,
        "dataset": dataset,
        "spec_hash": m.spec.spec_hash(),
        "benchmark": m.benchmark,
        "scenes": list(m.scenes),
        "seeds": m.seeds,
        "seed_scheme": m.scheme,
        "methods": {r.spec.name: _overrides(r) for r in m.methods},
        "metrics": list(m.metrics),
        "metric_params": {k_: dict(v) for k_, v in m.metric_params.items()},
        "scoring": dict(m.scoring),
        "replicates": replicates,
        "k": k,
        "floor": floor,
        "values": {method: {metric: band_entry(vals, k, floor) for metric, vals in per.items()}  # type: ignore[arg-type]
                   for method, per in measured.values.items()},
        "measured_on": machine_info(m.device, measured.manifest),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _overrides(request: MethodRequest) -> dict[str, Any]:
    return {k: v for k, v in request.params.items() if request.spec.defaults.get(k) != v}


def write_reference(path: Path, reference: Mapping[str, Any]) -> None:
    """Write a reference file atomically."""
    atomic_write_json(path, reference)


# ----------------------------------------------------------------------------------------------
# Reading a reference file


def load_reference(path: str | Path) -> dict[str, Any]:
    """Read and validate a reference file; a problem raises one ReferenceFileError naming file and field."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ReferenceFileError(f"{file}: no such reference file; make one with `bench reference create`") from err
    except json.JSONDecodeError as err:
        raise ReferenceFileError(f"{file}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        column = err.start - (err.object.rfind(b"\n", 0, err.start) + 1) + 1
        raise ReferenceFileError(
            f"{file}: line {line}, column {column}: expected UTF-8 JSON text ({err.reason}) "
            f"(got {quote_value(err.object[err.start : err.start + 1])})"
        ) from err
    except RecursionError as err:
        raise ReferenceFileError(f"{file}: expected JSON nested a few levels deep (it nests too deeply)") from err
    except OSError as err:  # a folder, no permission, ...
        raise ReferenceFileError(f"{file}: expected a readable reference file ({type(err).__name__}: "
                                 f"{err.strerror or err})") from err

    def fail(where: str, expected: str, got: Any = ...) -> ReferenceFileError:
        got_text = "" if got is ... else f" (got {quote_value(got)})"
        return ReferenceFileError(f"{file}: field '{where}': expected {expected}{got_text}")

    def need(mapping: Any, key: str, where: str, kind: type | tuple[type, ...], expected: str) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            raise fail(where, f"{expected} (required field is missing)")
        value = mapping[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise fail(where, expected, value)
        return value

    if not isinstance(data, dict):
        raise fail("<top>", "a JSON object", type(data).__name__)
    if data.get("format") != FORMAT:
        raise fail("format", f"'{FORMAT}'", data.get("format"))
    for key in ("name", "dataset", "spec_hash", "seed_scheme", "created"):
        need(data, key, key, str, "a string")
    if data["seed_scheme"] not in SEED_SCHEMES:
        raise fail("seed_scheme", f"one of {list(SEED_SCHEMES)}", data["seed_scheme"])
    if data.get("benchmark") is not None and not isinstance(data["benchmark"], str):
        raise fail("benchmark", "a benchmark id or null", data["benchmark"])
    for key, label in (("scenes", "scene ids"), ("metrics", "metric names")):
        items = need(data, key, key, list, f"a non-empty list of {label}")
        if not items or not all(isinstance(s, str) for s in items):
            raise fail(key, f"a non-empty list of {label}", items)
    for key, minimum in (("seeds", 1), ("replicates", 2)):
        if need(data, key, key, int, f"an integer >= {minimum}") < minimum:
            raise fail(key, f"an integer >= {minimum}", data[key])
    for key in ("k", "floor"):
        if need(data, key, key, (int, float), "a number >= 0") < 0:
            raise fail(key, "a number >= 0", data[key])
    for key in ("methods", "metric_params", "scoring", "measured_on", "values"):
        need(data, key, key, dict, "a JSON object")
    if not data["methods"]:
        raise fail("methods", "at least one method")
    for method in data["methods"]:
        need(data["methods"], method, f"methods.{method}", dict, "a JSON object of parameter overrides")
        per = need(data["values"], method, f"values.{method}", dict, "a JSON object of metric values")
        for metric in data["metrics"]:
            where = f"values.{method}.{metric}"
            entry = need(per, metric, where, dict, "a JSON object with value, seed_std, band, replicate_values")
            for key in ("value", "seed_std"):
                if not math.isfinite(need(entry, key, f"{where}.{key}", (int, float), "a finite number")):
                    raise fail(f"{where}.{key}", "a finite number", entry[key])
            lo_hi = need(entry, "band", f"{where}.band", list, "[low, high]")
            if len(lo_hi) != 2 or not all(_is_number(x) for x in lo_hi) or not lo_hi[0] <= entry["value"] <= lo_hi[1]:
                raise fail(f"{where}.band", "[low, high], two numbers around the value", lo_hi)
            reps = need(entry, "replicate_values", f"{where}.replicate_values", list, "a list of numbers")
            if len(reps) != data["replicates"] or not all(_is_number(x) for x in reps):
                raise fail(f"{where}.replicate_values", f"{data['replicates']} numbers (one per replicate)", reps)
    return data


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# ----------------------------------------------------------------------------------------------
# The check


@dataclass(frozen=True)
class CheckRow:
    """One (method, metric) of the check: the new value (None when missing) against the reference band."""

    method: str
    metric: str
    value: float | None
    band: tuple[float, float] | None
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when the value exists and lies inside the band."""
        return self.value is not None and self.band is not None and self.band[0] <= self.value <= self.band[1]


@dataclass
class CheckResult:
    """The rows of a check, and problems that fail it before any row (e.g. the spec changed)."""

    rows: list[CheckRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    method_keys: dict[str, str] = field(default_factory=dict)  # method name -> store key this check ran

    @property
    def ok(self) -> bool:
        """True when there is no problem and every row is inside its band."""
        return not self.problems and all(row.ok for row in self.rows)


def check_reference(
    reference: Mapping[str, Any],
    source: str | Path,
    spec: DatasetSpec,
    assets: AssetResolver,
    available: Mapping[str, MethodSpec],
    metric_registry: Mapping[str, Any],
    work: Path,
    *,
    methods: Sequence[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "cpu",
    quiet: bool = False,
) -> CheckResult:
    """Rerun replicate 0 of ``reference`` (read from ``source``) with ``overrides`` on top; compare to the bands."""
    result = CheckResult()
    if spec.spec_hash() != reference["spec_hash"]:
        result.problems.append(
            f"{source}: field 'spec_hash': the reference was measured on dataset '{reference['dataset']}' with spec "
            f"hash {reference['spec_hash']}, but {spec.path} now has hash {spec.spec_hash()}; the reference must be "
            f"refreshed (rerun `bench reference create` with the same options and commit the new file)"
        )
        return result
    names = list(methods) if methods else list(reference["methods"])
    overrides = overrides or {}
    for name in [*names, *overrides]:
        if name not in reference["methods"]:
            raise CheckError(f"--methods/--param: method '{name}' is not in the reference {source}; expected one of "
                             f"{sorted(reference['methods'])}")
    for name in overrides:
        if name not in names:
            raise CheckError(f"--param: method '{name}' is not among the checked --methods {names}")
    requests = []
    for name in names:
        if name not in available:
            result.rows += [CheckRow(name, metric, None, _band(reference, name, metric),
                                     "missing: method not registered here") for metric in reference["metrics"]]
            continue
        try:
            params = available[name].resolve_params({**reference["methods"][name], **overrides.get(name, {})})
        except ValueError as err:
            raise CheckError(f"{source}: methods.{name}: {err}") from err
        requests.append(MethodRequest(available[name], params))
        result.method_keys[name] = requests[-1].key
    metrics = [m for m in reference["metrics"] if m in metric_registry]
    for metric in reference["metrics"]:
        if metric not in metric_registry:
            result.rows += [CheckRow(r.spec.name, metric, None, _band(reference, r.spec.name, metric),
                                     "missing: metric not registered here") for r in requests]
    if requests and metrics:
        m = Measurement(spec, assets, requests, reference["scenes"], reference["seeds"], reference["seed_scheme"],
                        reference["benchmark"], metrics, reference["metric_params"], reference["scoring"], device)
        measured = measure(m, 1, work, metric_registry, quiet=quiet)
        for request in requests:
            for metric in metrics:
                value = measured.values[request.spec.name][metric][0]
                note = "" if value is not None else "missing: images failed or unscored"
                result.rows.append(CheckRow(request.spec.name, metric, value,
                                            _band(reference, request.spec.name, metric), note))
        result.problems += [f"failed item: {f}" for f in measured.summary.failures]
    order = {(name, metric): i for i, (name, metric) in
             enumerate((n, mt) for n in names for mt in reference["metrics"])}
    result.rows.sort(key=lambda row: order[(row.method, row.metric)])
    return result


def _band(reference: Mapping[str, Any], method: str, metric: str) -> tuple[float, float]:
    lo, hi = reference["values"][method][metric]["band"]
    return float(lo), float(hi)


def reference_rows(reference: Mapping[str, Any]) -> CheckResult:
    """A reference's own values as check rows (to print what ``bench reference create`` measured)."""
    return CheckResult(rows=[CheckRow(method, metric, entry["value"], tuple(entry["band"]))  # type: ignore[arg-type]
                             for method, per in reference["values"].items() for metric, entry in per.items()])


def format_check(result: CheckResult) -> str:
    """The check as a plain-text table: method, metric, value, band, OK/FAIL (and why)."""
    lines = [f"{'method':28s} {'metric':18s} {'value':>8s}  {'band':19s} status"] if result.rows else []
    for row in result.rows:
        value = "-" if row.value is None else f"{row.value:.4f}"
        band_text = "-" if row.band is None else f"[{row.band[0]:.4f}, {row.band[1]:.4f}]"
        status = "OK" if row.ok else "FAIL"
        if not row.ok and not row.note and row.value is not None and row.band is not None:
            status += " (below band)" if row.value < row.band[0] else " (above band)"
        lines.append(f"{row.method:28s} {row.metric:18s} {value:>8s}  {band_text:19s} {status}"
                     + (f" ({row.note})" if row.note else ""))
    lines += result.problems
    return "\n".join(lines)
