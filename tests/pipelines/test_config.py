from pathlib import Path

import pytest

from pipelines.config import ConfigError, apply_overrides, load_config, parse_override

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.joinpath("configs").glob("*.yaml")) + sorted(ROOT.joinpath("tests", "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_presets_validate(path):
    """Every preset loads, with its cross-stage references and checks (see the tests below)."""
    cfg = load_config(path)
    assert cfg.selected_stages() == list(cfg.stages)
    for name, stage in cfg.stages.items():
        assert stage.dataset_name() is None or stage.dataset_name() in cfg.datasets, name


def test_override_parses_yaml_scalars():
    assert parse_override("synth.scenes=3") == (["synth", "scenes"], 3)
    assert parse_override("ray.include_dashboard=true") == (["ray", "include_dashboard"], True)
    assert parse_override("stages=[synth, superpixels]") == (["stages"], ["synth", "superpixels"])


def test_overrides_apply_and_validate(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["stages.synth.scenes=3", "run_id=abc", f"runs_dir={tmp_path}"])
    assert cfg.stages["synth"].scenes == 3 and cfg.run_dir == tmp_path / "abc"


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"stages\.superpixels\.methd: unknown key"):
        load_config("configs/tiny.yaml", ["stages.superpixels.methd=slic"])


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"stages\.synth\.scenes"):
        load_config("configs/tiny.yaml", ["stages.synth.scenes=-1"])
    with pytest.raises(ConfigError, match=r"only: 'train_everything' is not a stage"):
        load_config("configs/tiny.yaml", ["only=[synth, train_everything]"])


def test_unknown_kind_names_the_known_kinds():
    with pytest.raises(ConfigError, match=r"stages\.extra: .*'teleport'.*'synth_driving', 'superpixels'"):
        load_config("configs/tiny.yaml", ["stages.extra={kind: teleport}"])


def test_references_between_stages_and_datasets_are_checked():
    with pytest.raises(ConfigError, match=r"stages\.overlay\.dataset: unknown dataset 'nope'"):
        load_config("configs/tiny.yaml", ["stages.overlay.dataset=nope"])
    with pytest.raises(ConfigError, match=r"stages\.overlay reads stage 'later'"):
        load_config("configs/tiny.yaml", ["stages.overlay.superpixels=later"])
    with pytest.raises(ConfigError, match=r"datasets\.driving\.from_stage: 'overlay' is not a stage .* writes a dataset"):
        load_config("configs/tiny.yaml", ["datasets.driving.from_stage=overlay"])
    with pytest.raises(ConfigError, match=r"datasets\.driving\.version .* must equal stages\.synth\.version"):
        load_config("configs/tiny.yaml", ["datasets.driving.version=v1.0-mini"])
    with pytest.raises(ConfigError, match=r"exactly one of root .* and from_stage"):
        load_config("configs/tiny.yaml", ["datasets.driving.root=/data/nuscenes"])
    with pytest.raises(ConfigError, match=r"stages\.evaluate\.students: stage 'superpixels' trains no student"):
        load_config("tests/configs/slidr_tiny.yaml", ["stages.evaluate.students=[superpixels]"])


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


def test_real_dataset_root_is_used_as_given():
    cfg = load_config("configs/superpixels_nuscenes.yaml", ["datasets.nuscenes.root=/mnt/nusc"])
    assert cfg.datasets["nuscenes"].root == Path("/mnt/nusc") and cfg.datasets["nuscenes"].from_stage is None


def test_unknown_superpixel_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"stages\.superpixels\.method.*slic_downsampled"):
        load_config("configs/tiny.yaml", ["stages.superpixels.method=quickshift"])


def test_paths_are_made_absolute_once_where_the_run_starts(tmp_path):
    """Ray Train workers run in their own cwd: every relative path is resolved against the driver's."""
    sensor_yaml = "sensors/my_lidar.yaml"
    cfg = load_config("configs/slidr_nuscenes.yaml", [
        "runs_dir=out/runs", "datasets.nuscenes.root=data/nusc",
        f"datasets.nuscenes.lidar_sensor={sensor_yaml}", "stages.slidr_range.teacher.weights_path=w/backbone.pt",
    ])
    resolved = cfg.with_absolute_paths(tmp_path)
    assert resolved.runs_dir == tmp_path / "out" / "runs"
    assert resolved.run_dir == tmp_path / "out" / "runs" / "slidr_nuscenes"
    assert resolved.datasets["nuscenes"].root == tmp_path / "data" / "nusc"
    assert resolved.datasets["nuscenes"].lidar_sensor == str(tmp_path / sensor_yaml)
    assert resolved.stages["slidr_range"].teacher.weights_path == tmp_path / "w" / "backbone.pt"
    assert resolved.stages["slidr_sparse"].teacher.weights_path is None
    # Preset names and absolute paths are left alone; the rest of the config is unchanged.
    preset = load_config("tests/configs/slidr_tiny.yaml", [f"runs_dir={tmp_path}"]).with_absolute_paths(Path("/x"))
    assert preset.runs_dir == tmp_path and preset.datasets["driving"].lidar_sensor == "hdl32e"
    assert resolved.stages["slidr_sparse"] == cfg.stages["slidr_sparse"]
    assert resolved.stages["evaluate"] == cfg.stages["evaluate"]


def test_deploy_model_that_evaluate_never_saves_is_refused_at_load_time():
    with pytest.raises(ConfigError, match=r"finetune_label_fractions \[0\.5\] are not in label_fractions"):
        load_config("configs/demo.yaml", ["stages.finetune.finetune_label_fractions=[0.5]"])
    with pytest.raises(ConfigError, match=r"model 'slidr_range_10pct' is never produced.*\['slidr_range_1pct'\]"):
        load_config("configs/demo.yaml", ["stages.finetune.label_fractions=[0.01]"])
    with pytest.raises(ConfigError, match=r"model 'slidr_range_10pct' is never produced.*\[\]"):
        load_config("configs/demo.yaml", ["stages.finetune.students=[slidr_sparse]"])
    with pytest.raises(ConfigError, match=r"model 'slidr_range_10pct' is never produced.*\[\]"):
        load_config("configs/demo.yaml", ["stages.deploy.evaluate=evaluate"])  # that one only probes
    with pytest.raises(ConfigError, match=r"stages\.deploy reads stage 'evaluate2'"):
        load_config("configs/demo.yaml", ["stages.deploy.evaluate=evaluate2"])
    with pytest.raises(ConfigError, match=r"saves 2 deployable models \['slidr_range_1pct', 'slidr_range_10pct'\]"):
        load_config("configs/demo.yaml", ["stages.deploy.model=null", "stages.finetune.label_fractions=[0.01, 0.1]"])
    ok = load_config("configs/demo.yaml", ["stages.deploy.model=null"])
    assert ok.stages["finetune"].finetune_fractions() == [0.1] and ok.stages["evaluate"].finetune_fractions() == []

def test_fused_heads_must_name_evaluated_students_and_a_frozen_feature_protocol():
    cfg = load_config("tests/configs/calico_tiny.yaml")
    assert cfg.stages["evaluate"].fused == [["prc", "rad"]]
    with pytest.raises(ConfigError, match=r"fused: \['other'\] are not in students"):
        load_config("tests/configs/calico_tiny.yaml", ["stages.evaluate.fused=[[prc,other]]"])
    with pytest.raises(ConfigError, match=r"at least two different stages"):
        load_config("tests/configs/calico_tiny.yaml", ["stages.evaluate.fused=[[prc,prc]]"])
    with pytest.raises(ConfigError, match=r"fused heads are evaluated on frozen features"):
        load_config("tests/configs/calico_tiny.yaml", ["stages.evaluate.protocols=[finetune]"])
    with pytest.raises(ConfigError, match=r"fused heads exist for \['pillar_bev', 'camera_bev'\] students"):
        load_config("configs/demo.yaml", ["stages.evaluate.fused=[[slidr_sparse,slidr_range]]"])
