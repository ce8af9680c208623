"""ImuWindowSpec: serialisation round trip, per-channel normalisation, prepare() == the manual chain, fit_stats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from modalities.imu.io import ImuColumns, read_imu, resample, window_starts, windows
from modalities.imu.spec import ImuWindowSpec, fit_stats


def _recording_with_gap(path):
    """100 Hz, 0.4 .. 21.39 s, a 0.3 s gap at 12.2 s; columns in deg/s and g, time in ms, own names."""
    rng = np.random.default_rng(3)
    t = 0.4 + np.arange(2100) / 100.0
    t = t[(t < 12.2) | (t > 12.5)]
    data = rng.standard_normal((t.size, 6)) + np.arange(6)
    lines = ["gx,gy,gz,ms,ax,ay,az"] + [",".join(f"{v:.6f}" for v in (*row[3:], ti * 1000, *row[:3]))
                                        for ti, row in zip(t, data)]
    path.write_text("\n".join(lines) + "\n")
    return path, ImuColumns(time="ms", time_unit="ms", acc_unit="g", gyro_unit="deg/s")


def test_defaults_are_comodo_200hz_5s_windows():
    spec = ImuWindowSpec()
    assert spec.window_samples == 1000 and spec.shape == (6, 1000)
    assert ImuWindowSpec(rate_hz=50.0, window_s=2.0).shape == (6, 100)


def test_to_dict_from_dict_round_trip_through_json():
    spec = ImuWindowSpec(rate_hz=100.0, window_s=2.5, max_gap_s=0.25,
                         columns=ImuColumns(time="ts", acc=("a1", "a2", "a3"), time_unit="ns", gyro_unit="deg/s"),
                         ).with_stats([0.1, -0.2, 9.7, 0.0, 0.01, -0.02], [1.5, 2.0, 0.5, 0.1, 0.2, 0.3])
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["kind"] == "imu_window" and d["shape"] == [6, 250] and d["channels"][3] == "gx"
    back = ImuWindowSpec.from_dict(d)
    assert back == spec and back.columns.time_unit == "ns" and back.std[2] == 0.5


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(kind="log_mel"), "kind 'log_mel'"),
    (lambda d: d.pop("max_gap_s"), "missing field 'max_gap_s'"),
    (lambda d: d.update(std=[1, 1, 0, 1, 1, 1]), "field 'std'"),
    (lambda d: d.update(mean=[0, 0, 0]), "field 'mean'"),
    (lambda d: d.update(rate_hz="fast"), "field 'rate_hz' = 'fast' is not a number"),
    (lambda d: d["columns"].update(gyro_unit="rpm"), "gyro_unit 'rpm' is not a known unit"),
])
def test_from_dict_names_where_and_the_bad_field(edit, match):
    d = ImuWindowSpec().to_dict()
    edit(d)
    with pytest.raises(ValueError, match=match) as e:
        ImuWindowSpec.from_dict(d, where="bundle.json: input")
    assert str(e.value).startswith("bundle.json: input")


def test_normalize_is_per_channel():
    spec = ImuWindowSpec().with_stats([1, 2, 3, 4, 5, 6], [1, 2, 4, 8, 16, 32])
    w = np.random.default_rng(0).standard_normal((3, 6, 10)).astype(np.float32)
    out = spec.normalize(w)
    assert out.dtype == np.float32 and out.shape == w.shape
    for c in range(6):
        np.testing.assert_allclose(out[:, c], (w[:, c] - (c + 1)) / 2.0 ** c, rtol=1e-6)
    np.testing.assert_allclose(spec.normalize(w[0]), out[0])  # one (6, L) window too
    with pytest.raises(ValueError, match="expected"):
        spec.normalize(w.transpose(0, 2, 1))


def test_prepare_equals_the_manual_chain(tmp_path):
    path, cols = _recording_with_gap(tmp_path / "imu.csv")
    spec = ImuWindowSpec(window_s=2.0, columns=cols).with_stats([0, 1, 2, 3, 4, 5], [1, 1, 2, 2, 3, 3])
    x, starts, ok = spec.prepare(path)
    res = resample(read_imu(path, cols), 200.0, 0.1)
    manual_starts = window_starts(res, 2.0)
    w, manual_ok = windows(res, manual_starts, 400)
    np.testing.assert_array_equal(starts, manual_starts)
    np.testing.assert_array_equal(starts, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0])
    np.testing.assert_array_equal(ok, manual_ok)
    np.testing.assert_array_equal(ok, [True, True, True, True, True, False, True, True, True])  # gap in [12, 14)
    np.testing.assert_array_equal(x, spec.normalize(w))
    assert x.dtype == np.float32 and x.shape == (9, 6, 400)


def test_fit_stats_is_per_channel_over_all_samples_and_skips_windows_not_ok():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 6, 100)) * np.arange(1, 7)[None, :, None] + np.arange(6)[None, :, None] * 10
    mean, std = fit_stats(w)
    flat = w.transpose(1, 0, 2).reshape(6, -1)
    np.testing.assert_allclose(mean, flat.mean(1))
    np.testing.assert_allclose(std, flat.std(1))
    w_bad = w.copy()
    w_bad[2] = 1e6
    ok = np.array([True, True, False, True, True])
    m2, s2 = fit_stats(w_bad, ok)
    np.testing.assert_allclose(m2, w[ok].transpose(1, 0, 2).reshape(6, -1).mean(1))
    np.testing.assert_allclose(s2, w[ok].transpose(1, 0, 2).reshape(6, -1).std(1))
    spec = ImuWindowSpec().with_stats(mean, std)
    z = spec.normalize(w).transpose(1, 0, 2).reshape(6, -1)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(1), 1, atol=1e-5)


def test_fit_stats_refuses_a_constant_channel_and_no_windows():
    w = np.random.default_rng(0).standard_normal((2, 6, 50))
    w[:, 4] = 0.0
    with pytest.raises(ValueError, match=r"\['gy'\] are constant"):
        fit_stats(w)
    with pytest.raises(ValueError, match="no windows"):
        fit_stats(w, np.zeros(2, bool))


def test_the_runtime_modules_do_not_import_torch():
    code = ("import sys; import modalities.imu.io, modalities.imu.spec, modalities.imu.augment; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
