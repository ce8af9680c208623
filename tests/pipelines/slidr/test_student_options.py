"""The range-view student's input channels are a SLidR option that reaches the network and its range-image spec."""

import pytest
from pydantic import ValidationError

from modalities.lidar.sensors import load_sensor
from pipelines.slidr.config import DistillConfig
from pipelines.slidr.model import build_student, student_kwargs
from pipelines.student_inputs import range_spec_of

ROTATION_INVARIANT = ["range", "z", "intensity", "mask"]


def _cfg(**range_net):
    return DistillConfig(dataset="d", superpixels="s", student="range_net", range_net={"base_channels": 8, **range_net})


def test_channels_reach_the_network_and_its_spec():
    everything = ["range", "x", "y", "z", "intensity", "mask"]
    cfg = _cfg(channels=everything)
    assert student_kwargs(cfg)["input_channels"] == everything
    student = build_student(cfg)
    assert student.stem[0][0].in_channels == 6  # the stem's first convolution
    spec = range_spec_of(student, load_sensor("hdl32e"))
    assert list(spec.channels) == everything
    # The default: the channels a rotation about z only shifts along the columns.
    default = build_student(_cfg())
    assert default.stem[0][0].in_channels == 4
    assert list(range_spec_of(default, load_sensor("hdl32e")).channels) == ROTATION_INVARIANT


@pytest.mark.parametrize("channels", [["range", "speed"], [], ["z", "z"]])
def test_unknown_empty_or_repeated_channels_are_refused(channels):
    with pytest.raises(ValidationError, match="range_net.channels"):
        _cfg(channels=channels)
