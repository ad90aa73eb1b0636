"""The ``bench`` command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.assets import AssetResolver, format_missing, missing_assets
from bench.catalog import DatasetError, load_dataset
from bench.methods import MethodSpec
from bench.plugins import (
    get_plugin_manager,
    plugin_manager,
    registered_datasets,
    registered_methods,
    registered_metrics,
    use_plugin_manager,
)
from bench.spec import Benchmark, DatasetSpec

DEFAULT_RUNS_DIR = Path("runs")


class CliError(RuntimeError):
    """A command-line mistake; printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------
# shared helpers


def resolve_dataset(name_or_path: str) -> DatasetSpec:
    """A dataset by registered name, or a spec file path."""
    try:
        return load_dataset(name_or_path)
    except DatasetError as err:
        raise CliError(str(err)) from err


def parse_params(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["lora-composer.steps=20"]`` -> ``{"lora-composer": {"steps": "20"}}``."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name_key, sep, value = pair.partition("=")
        method, dot, key = name_key.partition(".")
        if not sep or not dot or not method or not key:
            raise CliError(f"--param: '{pair}' is malformed; expected METHOD.KEY=VALUE, e.g. lora-composer.steps=20")
        out.setdefault(method, {})[key] = value
    return out


def select_methods(
    names: str, params: dict[str, dict[str, str]], dataset: DatasetSpec | None = None,
    unavailable: dict[str, str] | None = None,
) -> list[Any]:
    """The requested methods with their resolved parameters (``all`` = every built-in available on ``dataset``).

    With ``all``, a method that cannot run (:meth:`MethodSpec.availability`) is left out with a printed
    line, and its reason goes into ``unavailable`` (for the run's manifest).
    """
    from bench.runner import MethodRequest

    available: dict[str, MethodSpec] = registered_methods(plugin_manager())
    chosen = ([name for name, spec in available.items() if spec.reference is None] if names == "all"
              else [n.strip() for n in names.split(",") if n.strip()])
    for name in [*chosen, *params]:
        if name not in available:
            raise CliError(f"--methods: unknown method '{name}'; expected one of {sorted(available)}")
    try:
        requests = [MethodRequest(available[n], available[n].resolve_params(params.get(n, {}))) for n in chosen]
        if names != "all":
            return requests
        kept = []
        for request in requests:
            reason = request.spec.availability(request.params, dataset)
            if reason is None:
                kept.append(request)
                continue
            first = reason.splitlines()[0]
            if dataset is not None and not first.startswith("on dataset "):
                first = f"on dataset '{dataset.name}': {first}"
            sep = " " if first.startswith("on dataset ") else ": "
            print(f"skipping method '{request.spec.name}': unavailable{sep}{first}")
            if unavailable is not None:
                unavailable[request.spec.name] = reason
        return kept
    except ValueError as err:
        raise CliError(f"--param: {err}") from err


def print_skipped_scenes(methods: Sequence[Any], dataset: DatasetSpec, scenes: Sequence[str]) -> None:
    """One line per method and reason for the scenes a method leaves out (``MethodSpec.skip_scene``)."""
    for request in methods:
        by_reason: dict[str, list[str]] = {}
        for scene_id, reason in request.spec.skipped_scenes(request.params, dataset, scenes).items():
            by_reason.setdefault(reason, []).append(scene_id)
        for reason, ids in by_reason.items():
            print(f"method '{request.key}' skips {len(ids)} scene(s) ({', '.join(ids)}): {reason}")


def runnable_scenes(spec: DatasetSpec, scenes: Sequence[str], include_disabled: bool) -> list[str]:
    """``scenes`` without those upstream disables or cannot run (scene ``status``), each named in a printed
    line, unless ``include_disabled``."""
    runnable = spec.runnable_scenes(scenes, include_disabled)
    for scene_id in scenes:
        if scene_id not in runnable:
            scene = spec.scenes[scene_id]
            print(f"skipping scene '{scene_id}' ({scene.status}: {scene.status_reason}); "
                  "--include-disabled runs it")
    return runnable


def select_scenes(
    spec: DatasetSpec, benchmark_id: str | None, scenes_arg: str | None, seeds_arg: int | None,
    include_disabled: bool = False,
) -> tuple[Benchmark | None, list[str], int, str]:
    """(benchmark, scene ids, seeds per scene, seed scheme) from --benchmark/--scenes/--seeds and the spec.

    Scenes whose ``status`` is not 'ok' are left out with a printed line unless ``include_disabled``.
    """
    benchmark = spec.benchmarks.get(benchmark_id) if benchmark_id else spec.benchmarks.get("default")
    if benchmark_id and benchmark is None:
        raise CliError(f"--benchmark: '{benchmark_id}' is not in {spec.path}; expected one of "
                       f"{sorted(spec.benchmarks)}")
    scenes = _split(scenes_arg) or (list(benchmark.scenes) if benchmark else list(spec.scenes))
    for scene in scenes:
        if scene not in spec.scenes:
            raise CliError(f"--scenes: unknown scene '{scene}' in {spec.path}; expected one of {sorted(spec.scenes)}")
    scenes = runnable_scenes(spec, scenes, include_disabled)
    if not scenes:
        raise CliError(f"--scenes: every selected scene of {spec.path} is disabled or broken upstream; "
                       "expected --include-disabled to run them")
    seeds = seeds_arg or (benchmark.seeds if benchmark else 1)
    scheme = benchmark.seed_scheme if benchmark else "paper"
    return benchmark, scenes, seeds, scheme


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


def run_folders(values: Sequence[str]) -> list[Path]:
    """The given run folders; each must hold a manifest."""
    from bench.store import RunStore

    folders = [Path(v) for v in values]
    for folder in folders:
        RunStore(folder).read_manifest()  # raises StoreError naming the folder
    return folders


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# ----------------------------------------------------------------------------------------------
# commands


def cmd_run(args: argparse.Namespace) -> int:
    """bench run: generate images for methods x scenes x seeds into a run folder."""
    from bench.runner import RunError, run_benchmark
    from lcbench.workers import is_worker, launch_workers, worker_count, worker_rank

    workers = worker_count(args.workers, args.device)
    spec = resolve_dataset(args.dataset)
    # a worker's parent has printed what is skipped already
    with contextlib.redirect_stdout(io.StringIO()) if is_worker() else contextlib.nullcontext():
        benchmark, scenes, seeds, scheme = select_scenes(spec, args.benchmark, args.scenes, args.seeds,
                                                         args.include_disabled)
        unavailable: dict[str, str] = {}
        methods = select_methods(args.methods, parse_params(args.param), spec, unavailable)
        if not methods:
            raise CliError("--methods: no method selected")
        print_skipped_scenes(methods, spec, scenes)
    out = Path(args.out) if args.out else DEFAULT_RUNS_DIR / f"{spec.name}-{benchmark.id if benchmark else 'custom'}"
    assets = AssetResolver(spec, args.assets)
    if workers > 1 and not is_worker():
        print(f"bench run: {workers} workers ({args.device}); worker 0 shows its progress")
        return launch_workers(args.argv, workers, args.device)
    try:
        summary = run_benchmark(
            spec, assets, methods, scenes, seeds, out, scheme=scheme,
            benchmark=benchmark.id if benchmark else None, device=args.device,
            retry_failed=args.retry_failed, quiet=args.quiet or worker_rank() > 0, unavailable=unavailable,
        )
    except RunError as err:
        raise CliError(str(err)) from err
    share = f"worker {worker_rank()} of {workers}" if is_worker() else "this process"
    print(f"{out}: {summary.generated} generated, {summary.skipped} already done, {summary.failed} failed "
          f"(of {summary.planned} planned for {share})")
    for failure in summary.failures:
        print(f"  failed: {failure}")
    for broken in summary.redone:
        print(f"  redone (was broken): {broken}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """bench list: methods, datasets, metrics and runs."""
    from bench.store import RunStore, StoreError

    what = args.what
    dataset = resolve_dataset(args.dataset) if args.dataset else None
    if what in ("all", "methods"):
        print(f"methods (on dataset '{dataset.name}'):" if dataset is not None else "methods:")
        for name, spec in registered_methods(plugin_manager()).items():
            reason = spec.availability(spec.defaults, dataset)
            status = "" if reason is None else f"  [unavailable: {reason.splitlines()[0]}]"
            if reason is None and dataset is not None:
                skipped = spec.skipped_scenes(spec.defaults, dataset, dataset.runnable_scenes())
                if skipped:
                    status = f"  [skips {len(skipped)} scene(s): {next(iter(skipped.values())).splitlines()[0]}]"
            print(f"  {name:28s} {spec.description}{status}")
    if what in ("all", "datasets"):
        print("datasets:")
        for name, source in registered_datasets(plugin_manager()).items():
            print(f"  {name:28s} {source.description} ({source.spec_path})")
    if what in ("all", "metrics"):
        print("metrics:")
        for name, metric in registered_metrics(plugin_manager()).items():
            print(f"  {name:28s} {getattr(metric, 'description', '')}")
    if what in ("all", "runs"):
        print(f"runs (under {args.runs_dir}):")
        for manifest in sorted(Path(args.runs_dir).glob("*/manifest.json")):
            try:
                data = RunStore(manifest.parent).read_manifest()
            except StoreError as err:  # one unreadable run does not hide the others
                print(f"  {manifest.parent.name:28s} unreadable: {err}")
                continue
            images = len(list(manifest.parent.glob("items/*/*/*.png")))
            print(f"  {manifest.parent.name:28s} dataset={data['dataset']['name']} methods="
                  f"{','.join(data['methods'])} images={images}")
    return 0


def cmd_check_assets(args: argparse.Namespace) -> int:
    """bench check-assets: list exactly which files of a dataset are missing and where they are expected."""
    spec = resolve_dataset(args.dataset)
    resolver = AssetResolver(spec, args.assets)
    scenes = _split(args.scenes)
    if args.benchmark:
        if args.benchmark not in spec.benchmarks:
            raise CliError(f"--benchmark: '{args.benchmark}' is not in {spec.path}")
        scenes = list(spec.benchmarks[args.benchmark].scenes)
    chosen = scenes if scenes is not None else list(spec.scenes)
    runnable = runnable_scenes(spec, chosen, args.include_disabled)
    if len(runnable) < len(chosen):
        scenes = runnable
    missing = missing_assets(spec, resolver, scenes, open_files=True)  # opens LoRAs and .ckpt safely
    if not missing:
        print(f"{spec.name}: every asset is present under {resolver.root}")
        return 0
    print(format_missing(missing))
    return 1


def cmd_score(args: argparse.Namespace) -> int:
    """bench score: compute metrics for a run and write them beside it (resumable)."""
    from metrics.scoring import score_run

    metric_params = parse_params(args.param)
    for run in args.runs:
        if not args.no_calibrate:
            _calibrate(Path(run), args)
        out = score_run(
            Path(run), _split(args.metrics), params=metric_params, clip_model=args.clip_model,
            clip_weights=args.clip_weights, dino_model=args.dino_model, device=args.device,
            batch_size=args.batch_size, registry=registered_metrics(plugin_manager()), quiet=args.quiet,
            judge=args.judge,
        )
        print(f"scores written to {out}")
    return 0


def _calibrate(run: Path, args: argparse.Namespace) -> None:
    from bench.runner import RunError
    from lcbench.calibrate import calibrate

    try:
        params = parse_params(getattr(args, "calibration_param", []))
        summary = calibrate(run, device=args.device, quiet=args.quiet, params=params)
    except RunError as err:
        raise CliError(str(err)) from err
    print(f"{run}: calibration references: {summary.generated} made, {summary.skipped} already there, "
          f"{summary.failed} failed")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """bench calibrate: make the reference images (oracle, floors, probes) of a run's scenes and seeds."""
    for run in run_folders(args.runs):
        _calibrate(run, args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """bench report: tables, plots and grids for one or more scored runs."""
    from reports import write_report

    study = None
    if args.study:
        import json

        from lcbench.study.db import StudyDB

        db = StudyDB(args.study)
        study = {"answers": db.answers(), "runs": json.loads(db.meta().get("runs", "{}"))}
    index = write_report([Path(r) for r in args.runs], Path(args.out), formats=tuple(_split(args.format) or ["md"]),
                         aggregation=args.aggregation, pool=args.pool, show_uncalibrated=args.show_uncalibrated,
                         k=args.k, study=study)
    print(f"report written to {index}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """bench dashboard: serve the Streamlit app over the given runs (and study); SIGTERM/SIGINT stop it."""
    from lcbench.dashboard.launch import dashboard_command, serve

    argv = dashboard_command(
        run_folders(args.runs), Path(args.study) if args.study else None, args.port, address=args.address
    )
    return serve(argv)


def cmd_study_create(args: argparse.Namespace) -> int:
    """bench study create: build a user study from runs."""
    from lcbench.study import create_study

    participants: int | list[str] = (
        int(args.participants) if args.participants.isdigit() else _split(args.participants) or []
    )
    info = create_study(
        run_folders(args.runs), Path(args.out), methods=_split(args.methods),
        questions_per_participant=args.questions, participants=participants, seed=args.seed,
    )
    print(f"study written to {info.path} ({info.questions} questions per participant)")
    print(f"admin token: {info.admin_token}")
    print("participant codes: " + ", ".join(info.participant_codes))
    return 0


def cmd_study_export(args: argparse.Namespace) -> int:
    """bench study export: answers as CSV."""
    from lcbench.study import export_csv

    rows = export_csv(Path(args.study), Path(args.out))
    print(f"{rows} answers written to {args.out}")
    return 0


@contextlib.contextmanager
def _work_dir(work: str | None, prefix: str) -> Iterator[Path]:
    """``--work`` when given (kept, resumable), else a temporary folder deleted afterwards."""
    if work:
        yield Path(work)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp) / "run"


def _check_metrics(names: Sequence[str], params: dict[str, dict[str, str]]) -> None:
    metrics = registered_metrics(plugin_manager())
    for name in [*names, *params]:
        if name not in metrics:
            raise CliError(f"--metrics: unknown metric '{name}'; expected one of {sorted(metrics)}")
    for name in params:
        if name not in names:
            raise CliError(f"--metric-param: metric '{name}' is not in --metrics {list(names)}")


def cmd_reference_create(args: argparse.Namespace) -> int:
    """bench reference create: measure reference scores with seed-spread bands for ``bench check``."""
    from lcbench.regression import Measurement, create_reference, format_check, reference_rows, write_reference
    from metrics.scoring import default_metrics

    started = time.perf_counter()
    spec = resolve_dataset(args.dataset)
    benchmark, scenes, seeds, scheme = select_scenes(spec, args.benchmark, args.scenes, args.seeds,
                                                     args.include_disabled)
    methods = select_methods(args.methods, parse_params(args.param), spec)
    if not methods:
        raise CliError("--methods: no method selected")
    print_skipped_scenes(methods, spec, scenes)
    metrics = _split(args.metrics) or list(default_metrics(spec))
    metric_params = parse_params(args.metric_param)
    _check_metrics(metrics, metric_params)
    if args.replicates < 2:
        raise CliError(f"--replicates: expected an integer >= 2 (a spread needs two replicates), got {args.replicates}")
    out = Path(args.out)
    measurement = Measurement(
        spec, AssetResolver(spec, args.assets), methods, scenes, seeds, scheme, benchmark.id if benchmark else None,
        metrics, metric_params,
        {"clip_model": args.clip_model, "clip_weights": args.clip_weights, "dino_model": args.dino_model},
        args.device,
    )
    with _work_dir(args.work, "lcbench-reference-") as work:
        reference = create_reference(measurement, args.name or out.stem, args.dataset, args.replicates, work,
                                     registered_metrics(plugin_manager()), k=args.k, floor=args.floor, quiet=args.quiet)
    write_reference(out, reference)
    print(format_check(reference_rows(reference)))
    print(f"reference written to {out} ({len(methods)} method(s) x {len(metrics)} metric(s), {args.replicates} "
          f"replicates of {seeds} seed(s) x {len(scenes)} scene(s); took {time.perf_counter() - started:.1f} s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """bench check: rerun a reference's first replicate and fail when a score leaves its band."""
    from lcbench.regression import check_reference, format_check, load_reference

    started = time.perf_counter()
    reference = load_reference(args.reference)
    try:
        spec = resolve_dataset(reference["dataset"])
    except CliError as err:
        raise CliError(f"{args.reference}: field 'dataset': {err}") from err
    overrides = parse_params(args.param)
    measured_on = reference["measured_on"]
    print(f"reference '{reference['name']}' ({args.reference}): dataset {reference['dataset']}, scenes "
          f"{','.join(reference['scenes'])}, {reference['seeds']} seed(s) per scene; measured on "
          f"{measured_on.get('device')} (torch {measured_on.get('torch')}, git {measured_on.get('git')})")
    if str(measured_on.get("device", "")).split(" ")[0] != args.device:
        print(f"note: this check runs on {args.device}; values from another device may differ by more than the "
              "seed spread the bands were measured with")
    if overrides:
        print("overrides on top of the reference: "
              + ", ".join(f"{method}.{k}={v}" for method, params in overrides.items() for k, v in params.items()))
    with _work_dir(args.work, "lcbench-check-") as work:
        pm = plugin_manager()
        result = check_reference(
            reference, args.reference, spec, AssetResolver(spec, args.assets), registered_methods(pm),
            registered_metrics(pm), work, methods=_split(args.methods), overrides=overrides, device=args.device,
            quiet=args.quiet,
        )
    print(format_check(result))
    within = sum(row.ok for row in result.rows)
    compared = f"{within} of {len(result.rows)} scores within their bands" if result.rows else "nothing compared"
    print(f"check {'OK' if result.ok else 'FAIL'}: {compared}; wall time {time.perf_counter() - started:.1f} s")
    return 0 if result.ok else 1


def build_parser(pm: Any = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, plugins' commands (``bench_commands``) included."""
    pm = pm or plugin_manager()
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--plugins", action="append", default=[], metavar="FILE",
                        help="load a local plugin file (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate images")
    run.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    run.add_argument("--dataset", default="toy", help="registered dataset name or spec file (default: toy)")
    run.add_argument("--benchmark", help="benchmark id of the spec (default: 'default' if present)")
    run.add_argument("--scenes", help="comma-separated scene ids (default: the benchmark's)")
    run.add_argument("--seeds", type=positive_int, help="seeds per scene (default: the benchmark's)")
    run.add_argument("--out", help="run folder (default: runs/<dataset>-<benchmark>)")
    run.add_argument("--assets", help="asset root of the dataset (overrides env, config and spec)")
    run.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    run.add_argument("--workers", default="1", metavar="N|auto",
                     help="split the run over N local processes (auto: one per CPU core, or per GPU on cuda)")
    run.add_argument("--retry-failed", action="store_true", help="regenerate items recorded as failed")
    run.add_argument("--include-disabled", action="store_true",
                     help="also run scenes whose status is disabled-upstream or broken-upstream")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="show methods, datasets, metrics and runs")
    lst.add_argument("what", nargs="?", default="all", choices=["all", "methods", "datasets", "metrics", "runs"])
    lst.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))
    lst.add_argument("--dataset", help="say which methods are available on this dataset (name or spec file)")
    lst.set_defaults(func=cmd_list)

    chk = sub.add_parser("check-assets", help="list missing dataset files and where they are expected")
    chk.add_argument("--dataset", default="paper")
    chk.add_argument("--assets", help="asset root")
    chk.add_argument("--benchmark")
    chk.add_argument("--scenes")
    chk.add_argument("--include-disabled", action="store_true",
                     help="also check scenes whose status is disabled-upstream or broken-upstream")
    chk.set_defaults(func=cmd_check_assets)

    score = sub.add_parser("score", help="score a run (resumable)")
    score.add_argument("runs", nargs="+")
    score.add_argument("--metrics", help="comma-separated metric names (default: the four CLIP metrics, plus "
                       "vanishing and confusion when the dataset's evaluation section names a classifier)")
    score.add_argument("--param", action="append", default=[], metavar="METRIC.KEY=VALUE")
    score.add_argument("--clip-model", help="open_clip model name, builtin:random-clip or builtin:toy-clip "
                       "(default: the dataset's evaluation.clip_model, else builtin:random-clip)")
    score.add_argument("--clip-weights", help="local weights file of the CLIP model (default: the dataset's "
                       "evaluation.clip_weights when the model is the dataset's)")
    score.add_argument("--dino-model", default="builtin:random-dino", help="local DINOv2 folder")
    score.add_argument("--judge", help="box judge of vanishing/confusion (default: the dataset's "
                       "evaluation.classifier), e.g. detector=owlv2:DIR,identity=dino:DIR (metrics/judges/spec.py); "
                       "with it, vanishing and confusion are among the default metrics")
    score.add_argument("--device", default="cpu")
    score.add_argument("--batch-size", type=positive_int, default=16)
    score.add_argument("--no-calibrate", action="store_true",
                       help="score only what is there, without making the calibration's reference images first")
    score.set_defaults(func=cmd_score)

    calibrate = sub.add_parser("calibrate", help="make a run's calibration references (bench score does it first)")
    calibrate.add_argument("runs", nargs="+")
    calibrate.add_argument("--device", default="cpu")
    calibrate.add_argument("--param", dest="calibration_param", action="append", default=[],
                           metavar="REFERENCE.KEY=VALUE", help="e.g. ref-floor-base.steps=20")
    calibrate.set_defaults(func=cmd_calibrate)

    report = sub.add_parser("report", help="write tables, plots and grids")
    report.add_argument("runs", nargs="+")
    report.add_argument("--format", default="md", help="comma-separated: md, latex, csv")
    report.add_argument("--out", default="reports_out")
    report.add_argument("--aggregation", default="bench", choices=["bench", "upstream"],
                        help="bench: regions -> image -> scene -> style (default); upstream: the official "
                        "evaluation's mean per concept role over images, then over all roles and layouts")
    report.add_argument("--pool", action="store_true", help="pool runs that hold the same method key into one row")
    report.add_argument("--show-uncalibrated", action="store_true",
                        help="keep the columns of metrics that fail the calibration check (marked)")
    report.add_argument("--k", type=float, default=3.0,
                        help="calibration check: each gap must reach k seed standard deviations (default 3)")
    report.add_argument("--study", help="a study folder (bench study create): adds each metric's rank "
                        "correlation with its ratings")
    report.set_defaults(func=cmd_report)

    dash = sub.add_parser("dashboard", help="serve the Streamlit dashboard")
    dash.add_argument("runs", nargs="+")
    dash.add_argument("--study")
    dash.add_argument("--port", type=int, default=8501)
    dash.add_argument("--address", help="address to serve on (default: Streamlit's)")
    dash.set_defaults(func=cmd_dashboard)

    study = sub.add_parser("study", help="user studies").add_subparsers(dest="study_command", required=True)
    create = study.add_parser("create", help="build a study from runs")
    create.add_argument("runs", nargs="+")
    create.add_argument("--out", required=True)
    create.add_argument("--methods")
    create.add_argument("--questions", type=positive_int, default=None,
                        help="questions per participant (default: every usable image, at most 60)")
    create.add_argument("--participants", default="25", help="a number of participants or comma-separated codes")
    create.add_argument("--seed", type=int, default=0)
    create.set_defaults(func=cmd_study_create)
    export = study.add_parser("export", help="export answers as CSV")
    export.add_argument("study")
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_study_export)

    ref = sub.add_parser("reference", help="reference scores for `bench check`").add_subparsers(
        dest="reference_command", required=True)
    rcreate = ref.add_parser("create", help="measure reference scores and their seed-spread bands")
    rcreate.add_argument("--dataset", default="toy", help="registered dataset name or spec file (default: toy)")
    rcreate.add_argument("--benchmark", help="benchmark id of the spec (default: 'default' if present)")
    rcreate.add_argument("--methods", required=True, help="comma-separated method names")
    rcreate.add_argument("--scenes", help="comma-separated scene ids (default: the benchmark's)")
    rcreate.add_argument("--include-disabled", action="store_true",
                         help="also measure scenes whose status is disabled-upstream or broken-upstream")
    rcreate.add_argument("--seeds", type=positive_int, help="seeds per scene that `bench check` reruns")
    rcreate.add_argument("--replicates", type=positive_int, default=5,
                         help="subsets of --seeds fresh seeds per scene measured for the spread (>= 2)")
    rcreate.add_argument("--metrics", help="comma-separated metric names (default: as `bench score`)")
    rcreate.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE")
    rcreate.add_argument("--metric-param", action="append", default=[], metavar="METRIC.KEY=VALUE")
    rcreate.add_argument("--clip-model", help="open_clip model name (default: the spec's evaluation.clip_model, "
                         "else builtin:random-clip)")
    rcreate.add_argument("--clip-weights", help="local weights file of the CLIP model")
    rcreate.add_argument("--dino-model", default="builtin:random-dino", help="local DINOv2 folder")
    rcreate.add_argument("--k", type=float, default=3.0, help="band half-width in seed-spread std units")
    rcreate.add_argument("--floor", type=float, default=0.005, help="minimum band half-width")
    rcreate.add_argument("--name", help="reference name (default: the --out file's stem)")
    rcreate.add_argument("--out", required=True, help="reference file, e.g. reports/reference/<name>.json")
    rcreate.add_argument("--work", help="run folder to keep (and resume); default: a temporary folder")
    rcreate.add_argument("--assets", help="asset root of the dataset")
    rcreate.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    rcreate.set_defaults(func=cmd_reference_create)

    check = sub.add_parser("check", help="rerun a reference's first replicate; exit 1 when a score leaves its band")
    check.add_argument("--reference", required=True, help="reference file made by `bench reference create`")
    check.add_argument("--methods", help="comma-separated subset of the reference's methods")
    check.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                       help="override on top of the reference's parameters (repeatable)")
    check.add_argument("--work", help="run folder to keep (and resume); default: a temporary folder")
    check.add_argument("--assets", help="asset root of the dataset")
    check.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    check.set_defaults(func=cmd_check)

    pm.hook.bench_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bench`` console script."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugins", action="append", default=[])
    known, _ = early.parse_known_args(argv)
    previous = os.environ.get("TQDM_DISABLE")
    outer = use_plugin_manager(None)
    try:
        use_plugin_manager(get_plugin_manager(known.plugins))
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        if args.quiet:
            os.environ["TQDM_DISABLE"] = "1"  # also silences the progress bars inside methods (e.g. fusion)
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, OSError) as err:  # every bench error derives from one of these
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    finally:
        use_plugin_manager(outer)
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


if __name__ == "__main__":
    sys.exit(main())
