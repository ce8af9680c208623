"""The ``edgedistill`` command line (also ``python -m pipelines``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .logs import log_to_file, setup_logging

log = logging.getLogger("edgedistill")


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, args.overrides)  # fail fast, before the heavy imports

    from .ray_utils import ensure_ray
    from .runner import Runner

    unknown = [s for s in args.force if s not in cfg.selected_stages()]
    if unknown:
        raise SystemExit(f"--force {unknown}: not stages this run executes ({cfg.selected_stages()})")
    relative_runs_dir = not cfg.runs_dir.is_absolute()
    cfg = cfg.with_absolute_paths()  # once, here: Ray workers do not share the driver's cwd
    log_to_file(cfg.run_dir / "run.log")
    if relative_runs_dir and (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        log.warning("runs_dir is relative: the run is written to %s on the driver's machine; under `ray job submit` "
                    "that is inside the job's temporary working directory and other nodes cannot see it. "
                    "Pass runs_dir=<a shared absolute path>.", cfg.runs_dir)
    log.info("run %s -> %s (stages: %s)", cfg.resolved_run_id, cfg.run_dir, ", ".join(cfg.selected_stages()))
    ensure_ray(cfg.ray)
    Runner(cfg, force=tuple(args.force)).run()
    log.info("report: %s", cfg.run_dir / "report.md")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from .config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from tqdm import tqdm

    from modalities.synthetic.config import SynthConfig
    from modalities.synthetic.nuscenes_writer import generate_scene, write_tables

    from .config import ConfigError, apply_overrides, _format_validation_error

    raw = {"scenes": args.scenes, "seed": args.seed}
    for key in ("samples_per_scene", "image_width", "image_height", "lidar_sensor", "sweeps_per_sample"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    raw = apply_overrides(raw, args.set)
    try:
        cfg = SynthConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error("synth options", e)) from None
    out = Path(args.out)
    records = [generate_scene(out, cfg, i) for i in tqdm(range(cfg.scenes), desc="synth scenes", unit="scene")]
    summary = write_tables(out, cfg, records)
    log.info("wrote %s: %s", out, summary)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import print_report

    print_report()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgedistill")
    except PackageNotFoundError:  # a working directory that was not pip-installed (ray job submit)
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from deploy.cli import HelpFormatter, add_deploy_commands

    p = argparse.ArgumentParser(
        prog="edgedistill",
        description="Label-free sensor distillation for edge devices: run pipelines, make data, check the machine.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", formatter_class=HelpFormatter, help="run a pipeline config (resumes; skips stages whose manifest matches)",
                         description="Run the stages of a pipeline YAML into runs_dir/run_id. "
                         "Local Ray by default; under `ray job submit` it attaches to the cluster.")
    run.add_argument("config", help="pipeline YAML, e.g. configs/demo.yaml")
    run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. synth.scenes=4 run_id=try2")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="re-run this stage even if its manifest matches (repeatable)")
    run.set_defaults(fn=_cmd_run)

    config = sub.add_parser("config", formatter_class=HelpFormatter, help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", formatter_class=HelpFormatter, help="print the resolved, validated config")
    show.add_argument("config", help="pipeline YAML")
    show.add_argument("overrides", nargs="*", help="dotted overrides, as for `run`")
    show.set_defaults(fn=_cmd_config_show)

    data = sub.add_parser("data", formatter_class=HelpFormatter, help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_sub.add_parser("synth", formatter_class=HelpFormatter, help="generate a synthetic nuScenes-format driving dataset",
                                description="Procedural driving scenes: ray-cast lidar, 6 cameras, lidarseg, "
                                "rendered semantic/depth ground truth. Deterministic in the seed.")
    synth.add_argument("--out", required=True, help="dataset root to write")
    synth.add_argument("--scenes", type=int, default=2, help="scenes to generate")
    synth.add_argument("--seed", type=int, default=0, help="same seed and options: byte-identical files")
    synth.add_argument("--samples-per-scene", dest="samples_per_scene", type=int, help="key frames per scene")
    synth.add_argument("--sweeps-per-sample", dest="sweeps_per_sample", type=int, help="lidar sweeps between key frames")
    synth.add_argument("--width", dest="image_width", type=int, help="camera image width (px)")
    synth.add_argument("--height", dest="image_height", type=int, help="camera image height (px)")
    synth.add_argument("--sensor", dest="lidar_sensor", help="lidar preset (vlp16, hdl32e, hdl64e, os1_64) or YAML path")
    synth.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other SynthConfig field")
    synth.set_defaults(fn=_cmd_data_synth)

    doctor = sub.add_parser("doctor", formatter_class=HelpFormatter, help="report GPU, spconv algorithm, TensorRT, Ray, free disk")
    doctor.set_defaults(fn=_cmd_doctor)

    add_deploy_commands(sub)  # export, quantize, bench, infer
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        if args.verbose:
            raise
        print(f"edgedistill: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
