"""The window_features evaluation task on a user's own labelled IMU folder (other rate, units, no video)."""

import logging
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

from modalities.imu.spec import ImuWindowSpec
from modalities.imu.students import build_imu_student
from pipelines.datasets import EgocentricDatasetSpec
from pipelines.evaluate.config import EvaluateConfig
from pipelines.evaluate.window_classification import WindowClassificationTask

G = 9.80665


def _write(path, t, acc_si, gyro_si, units: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if units == "si":
        cols, tt, a, g = "t,ax,ay,az,gx,gy,gz", t, acc_si, gyro_si
    else:  # milliseconds, g, deg/s, other column names
        cols, tt, a, g = "time_ms,accX,accY,accZ,gyrX,gyrY,gyrZ", t * 1000, acc_si / G, np.degrees(gyro_si)
    rows = np.column_stack([tt, a, g])
    np.savetxt(path, rows, delimiter=",", header=cols, comments="", fmt="%.9g")


def _folder(root, units: str, bad: bool = False):
    lines = ["recording,label,subject"]
    for subj in range(4):
        for k, label in enumerate(("slow", "fast")):
            t = np.arange(0, 10.2, 1 / 50.0)  # 50 Hz, 10 s: two windows
            f = 1.0 + 2.0 * k + 0.1 * subj
            acc = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t), G + 0 * t], 1)
            gyro = 0.5 * np.stack([np.cos(2 * np.pi * f * t), 0 * t, np.sin(2 * np.pi * f * t)], 1)
            name = f"s{subj}/{label}.csv"
            _write(root / name, t, acc, gyro, units)
            lines.append(f"{name},{label},s{subj}")
    if bad:
        (root / "s3/broken.csv").write_text("t,ax,ay,az,gx,gy,gz\n0,1,2,3,4,5,6\n0.02,1,2,nan,4,5,6\n")
        lines.append("s3/broken.csv,slow,s3")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _task(root, imu: dict):
    spec = EgocentricDatasetSpec(root=root, holdout_subjects=1, imu=imu)
    ctx = SimpleNamespace(dataset=spec, inputs={"dataset": root}, seed=0, log=logging.getLogger("t"))
    return WindowClassificationTask(ctx, EvaluateConfig(dataset="x", students=["s"]))


def test_other_units_and_rate_give_the_same_windows_and_bad_files_are_counted(tmp_path):
    torch.manual_seed(0)
    net = build_imu_student("imu_cnn", {"widths": [8, 8, 8, 8]})
    save_file(net.state_dict(), str(tmp_path / "student.safetensors"))
    spec = ImuWindowSpec().with_stats([0, 0, G, 0, 0, 0], [0.7, 0.7, 0.1, 0.35, 0.1, 0.35])
    record = {"kind": "imu_cnn", "kwargs": {"widths": [8, 8, 8, 8]}, "weights": "student.safetensors",
              "input": spec.to_dict(), "task": "window_features"}
    _folder(tmp_path / "si", "si")
    _folder(tmp_path / "user", "user", bad=True)
    a = _task(tmp_path / "si", {})
    b = _task(tmp_path / "user", {"time": "time_ms", "acc": ["accX", "accY", "accZ"], "gyro": ["gyrX", "gyrY", "gyrZ"],
                                  "time_unit": "ms", "acc_unit": "g", "gyro_unit": "deg/s"})
    pa, pb = a.student(record, tmp_path), b.student(record, tmp_path)
    assert a.class_names == b.class_names == ["fast", "slow"]
    assert a.num_train == b.num_train == 3 * 2 * 2 and len(a.test) == len(b.test) == 2 * 2  # subject s3 held out
    assert np.allclose(pa.train[2].numpy(), pb.train[2].numpy(), atol=1e-4)  # unit conversion is exact
    assert a.skipped == 0 and b.skipped == 1  # the NaN file: a counted skip, not a crash
    fd, fr = pa.test_features("distilled")[0], pa.test_features("random")[0]
    assert fd.shape == (4, 8) and torch.allclose(fd, fr)  # distilled weights = this seed's init here
    assert pa.train[1].tolist() == [1, 1, 0, 0] * 3  # windows keep their recording's label (slow=1, fast=0)
