"""The student record (training stage -> evaluation, deploy): written by SLidR, read with checks."""

import json

import pytest
import torch
from safetensors.torch import save_file

from modalities.lidar.students import build_lidar_student
from pipelines.slidr.config import DistillConfig
from pipelines.slidr.model import build_student
from pipelines.slidr.stage import student_record
from pipelines.student_inputs import range_spec_of
from pipelines.student_record import STUDENT_RECORD, read_student_record
from modalities.lidar.range_spec import RangeImageSpec
from modalities.lidar.sensors import load_sensor


@pytest.fixture
def stage_dir(tmp_path):
    cfg = DistillConfig(dataset="d", superpixels="s", student="range_net", range_net={"base_channels": 4})
    torch.manual_seed(0)
    student = build_student(cfg)
    save_file(student.state_dict(), str(tmp_path / "student.safetensors"))
    spec = range_spec_of(student, load_sensor("hdl32e"))
    (tmp_path / STUDENT_RECORD).write_text(json.dumps(student_record(cfg, spec, tmp_path)))
    return tmp_path


def test_record_rebuilds_the_same_student(stage_dir):
    from safetensors.torch import load_file

    record = read_student_record(stage_dir)
    assert record["kind"] == "range_net" and record["input"]["kind"] == "range_image"
    spec = RangeImageSpec.from_dict(record["input"])  # the full pre-processing contract travels with the weights
    # 4 channels: the default range, z, intensity, mask
    assert spec.sensor.name == "hdl32e" and spec.image_shape == (4, 32, 1088) and spec.beam_source == "ring_if_present"
    assert record["teacher"]["name"] == "efficientnet_lite0"
    rebuilt = build_lidar_student(record["kind"], record["kwargs"])
    rebuilt.load_state_dict(load_file(str(stage_dir / record["weights"])))  # strict: same architecture
    torch.manual_seed(0)
    ref = build_student(DistillConfig(dataset="d", superpixels="s", student="range_net", range_net={"base_channels": 4}))
    x = torch.randn(1, len(ref.input_channels), 32, 64)
    ref.eval()
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), ref(x))


def test_changed_weights_missing_fields_and_missing_record_are_named(stage_dir):
    weights = stage_dir / "student.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"student\.safetensors: sha256 does not match"):
        read_student_record(stage_dir)
    record = json.loads((stage_dir / STUDENT_RECORD).read_text())
    del record["input"]
    (stage_dir / STUDENT_RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"student\.json: missing field\(s\) \['input'\]"):
        read_student_record(stage_dir)
    (stage_dir / STUDENT_RECORD).unlink()
    with pytest.raises(FileNotFoundError, match="no student record"):
        read_student_record(stage_dir)


def test_evaluation_of_a_student_trained_for_another_lidar_names_both(stage_dir):
    from pipelines.evaluate.probe import StudentSpec

    record = read_student_record(stage_dir)
    assert StudentSpec.from_record(record, load_sensor("hdl32e")).range_spec.sensor.name == "hdl32e"
    with pytest.raises(ValueError, match="trained for lidar 'hdl32e' but the evaluation dataset's lidar is 'vlp16'"):
        StudentSpec.from_record(record, load_sensor("vlp16"), "x/student.json")


def test_a_record_task_without_an_evaluation_task_is_named():
    from pipelines.evaluate.point_segmentation import PointSegmentationTask
    from pipelines.evaluate.tasks import evaluation_task

    assert evaluation_task("point_features", "r") is PointSegmentationTask
    with pytest.raises(ValueError, match=r"r/student.json: no evaluation task for student task 'box_features'; "
                                         r"known: \['bev_features', 'clip_features', 'point_features', "
                                         r"'window_features'\]"):
        evaluation_task("box_features", "r/student.json")
