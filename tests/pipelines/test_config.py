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
