from pathlib import Path

import pytest

from pipelines.config import ConfigError, apply_overrides, load_config, parse_override

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_presets_validate(path):
    cfg = load_config(path)
    assert cfg.stages


def test_override_parses_yaml_scalars():
    assert parse_override("synth.scenes=3") == (["synth", "scenes"], 3)
    assert parse_override("ray.include_dashboard=true") == (["ray", "include_dashboard"], True)
    assert parse_override("stages=[synth, superpixels]") == (["stages"], ["synth", "superpixels"])


def test_overrides_apply_and_validate(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["synth.scenes=3", "run_id=abc", f"runs_dir={tmp_path}"])
    assert cfg.synth.scenes == 3 and cfg.run_dir == tmp_path / "abc"


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"superpixels\.methd: unknown key"):
        load_config("configs/tiny.yaml", ["superpixels.methd=slic"])


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"synth\.scenes"):
        load_config("configs/tiny.yaml", ["synth.scenes=-1"])
    with pytest.raises(ConfigError, match=r"stages"):
        load_config("configs/tiny.yaml", ["stages=[synth, train_everything]"])


def test_override_into_a_value_is_rejected():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_real_dataset_needs_a_root():
    with pytest.raises(ConfigError, match="dataset.root"):
        load_config("configs/tiny.yaml", ["stages=[superpixels]", "dataset.source=nuscenes"])


def test_unknown_superpixel_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"superpixels\.method.*slic_downsampled"):
        load_config("configs/tiny.yaml", ["superpixels.method=quickshift"])


def test_paths_are_made_absolute_once_where_the_run_starts(tmp_path):
    """Ray Train workers run in their own cwd: every relative path is resolved against the driver's."""
    sensor_yaml = "sensors/my_lidar.yaml"
    cfg = load_config("configs/slidr_tiny.yaml", [
        "runs_dir=out/runs", "stages=[superpixels, slidr_range]", "dataset.root=data/nusc",
        f"dataset.lidar_sensor={sensor_yaml}", "slidr_range.teacher.weights_path=w/backbone.pt",
    ])
    resolved = cfg.with_absolute_paths(tmp_path)
    assert resolved.runs_dir == tmp_path / "out" / "runs"
    assert resolved.run_dir == tmp_path / "out" / "runs" / "slidr_tiny"
    assert resolved.dataset.root == tmp_path / "data" / "nusc"
    assert resolved.dataset.lidar_sensor == str(tmp_path / sensor_yaml)
    assert resolved.slidr_range.teacher.weights_path == tmp_path / "w" / "backbone.pt"
    assert resolved.slidr_sparse.teacher.weights_path is None
    # Preset names and absolute paths are left alone; the rest of the config is unchanged.
    preset = load_config("configs/slidr_tiny.yaml", [f"runs_dir={tmp_path}"]).with_absolute_paths(Path("/elsewhere"))
    assert preset.runs_dir == tmp_path and preset.dataset.lidar_sensor == "hdl32e"
    changed = {"runs_dir", "dataset", "slidr_range"}
    assert resolved.model_dump(exclude=changed) == cfg.model_dump(exclude=changed)


def test_deploy_model_that_evaluate_never_saves_is_refused_at_load_time():
    with pytest.raises(ConfigError, match=r"finetune_label_fractions \[0\.5\] are not in label_fractions"):
        load_config("configs/demo.yaml", ["evaluate.finetune_label_fractions=[0.5]"])
    with pytest.raises(ConfigError, match=r"deploy.model 'slidr_range_10pct' is never produced.*\['slidr_range_1pct'\]"):
        load_config("configs/demo.yaml", ["evaluate.finetune_label_fractions=[0.01]"])
    with pytest.raises(ConfigError, match=r"deploy.model 'slidr_range_10pct' is never produced.*\[\]"):
        load_config("configs/demo.yaml", ["stages=[synth, superpixels, slidr_sparse, evaluate, deploy]"])
    with pytest.raises(ConfigError, match="add 'evaluate' before it"):
        load_config("configs/demo.yaml", ["stages=[synth, superpixels, slidr_range, deploy]"])
    with pytest.raises(ConfigError, match=r"saves 2 deployable models \['slidr_range_1pct', 'slidr_range_10pct'\]"):
        load_config("configs/demo.yaml", ["deploy.model=null", "evaluate.finetune_label_fractions=null"])
    ok = load_config("configs/demo.yaml", ["deploy.model=null"])
    assert ok.evaluate.finetune_fractions() == [0.1]
