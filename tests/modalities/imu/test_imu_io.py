"""IMU reading, resampling and windowing: analytic signals, exact unit conversion, one test per bad input.

Every bad-input test asserts that the message starts with the file and names the data row (the row
after the header is data row 1) and column where they apply.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from modalities.errors import DataError, MissingDataError
from modalities.imu.io import (ImuColumns, ImuRecording, read_imu, resample, window_starts, windows)

HEADER = "t,ax,ay,az,gx,gy,gz"


def _write_csv(path, t, data, header=HEADER, fmt="{:.9f}"):
    lines = [header] + [",".join([fmt.format(ti)] + [repr(float(v)) for v in row]) for ti, row in zip(t, data)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(path, rows, header=HEADER):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_csv_sine_at_100hz_resampled_to_200hz_matches_the_analytic_signal(tmp_path):
    f = np.array([0.7, 1.3, 2.0, 0.5, 1.1, 3.0])  # one frequency per channel, Hz
    t = 0.0123 + np.arange(1000) / 100.0  # 100 Hz, starting off the 200 Hz grid
    data = np.sin(2 * np.pi * f[None, :] * t[:, None])
    rec = read_imu(_write_csv(tmp_path / "sine.csv", t, data))
    assert rec.t.dtype == np.float64 and rec.data.dtype == np.float32 and rec.data.shape == (1000, 6)
    res = resample(rec, 200.0)
    assert res.t0 == pytest.approx(0.015)  # first multiple of 1/200 s at or after 0.0123
    assert res.times[-1] <= t[-1] and res.times[-1] + 1 / 200 > t[-1]
    assert res.num_samples == int(np.floor(t[-1] * 200)) - 3 + 1
    expected = np.sin(2 * np.pi * f[None, :] * res.times[:, None])
    # linear interpolation error <= h^2 / 8 * max|x''| = 0.01^2 / 8 * (2 pi f)^2
    bound = 0.01 ** 2 / 8 * (2 * np.pi * f) ** 2 + 1e-6
    assert np.all(np.abs(res.data - expected).max(axis=0) <= bound)
    assert np.abs(res.data - expected).max() > 1e-6  # it is interpolated, not recomputed
    assert res.valid.all()


def test_resampling_reproduces_a_linear_signal_exactly_and_keeps_recorded_samples(tmp_path):
    t = np.array([0.0, 0.01, 0.025, 0.03, 0.05])  # irregular
    data = np.stack([3 * t + c for c in range(6)], 1)
    res = resample(ImuRecording(tmp_path / "x.csv", t, data.astype(np.float32)), 200.0)
    np.testing.assert_allclose(res.times, np.arange(11) * 0.005, atol=1e-12)
    np.testing.assert_allclose(res.data, np.stack([3 * res.times + c for c in range(6)], 1), atol=1e-6)


def test_units_g_and_deg_per_s_and_ms_convert_exactly_with_configured_column_names(tmp_path):
    cols = ImuColumns(time="time_ms", acc=("accX", "accY", "accZ"), gyro=("gyrX", "gyrY", "gyrZ"),
                      time_unit="ms", acc_unit="g", gyro_unit="deg/s")
    header = "gyrZ,time_ms,accX,accY,accZ,gyrX,gyrY,extra"  # any order, extra columns ignored
    p = _rows(tmp_path / "units.csv", ["30,0,1,0.5,-2,90,180,7", "-30,20,0,1,0,-45,0,7", "1,40,0,0,0,0,0,7"],
              header=header)
    rec = read_imu(p, cols)
    np.testing.assert_array_equal(rec.t, [0.0, 0.02, 0.04])
    g, d2r = 9.80665, np.pi / 180
    np.testing.assert_array_equal(rec.data[0], np.float32([1 * g, 0.5 * g, -2 * g, 90 * d2r, 180 * d2r, 30 * d2r]))
    np.testing.assert_array_equal(rec.data[1], np.float32([0, 1 * g, 0, -45 * d2r, 0, -30 * d2r]))
    assert rec.data[0, 4] == np.float32(np.pi)


@pytest.mark.parametrize("unit,ns_per_tick", [("us", 1000), ("ns", 1)])
def test_time_units_us_and_ns(tmp_path, unit, ns_per_tick):
    ticks = np.array([1_000_000_000, 1_005_000_000, 1_010_000_000], np.int64) // ns_per_tick
    p = _rows(tmp_path / f"t_{unit}.csv", [f"{k},0,0,9.8,0,0,0" for k in ticks])
    rec = read_imu(p, ImuColumns(time_unit=unit))
    np.testing.assert_allclose(rec.t, [1.0, 1.005, 1.01], rtol=0, atol=1e-12)


def test_npy_reads_like_the_csv(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(50) / 50.0
    data = rng.standard_normal((50, 6))
    np.save(tmp_path / "r.npy", np.concatenate([t[:, None] * 1000, data], 1))
    cols = ImuColumns(time_unit="ms", acc_unit="g")
    a = read_imu(tmp_path / "r.npy", cols)
    b = read_imu(_write_csv(tmp_path / "r.csv", t * 1000, data), cols)
    np.testing.assert_allclose(a.t, b.t, atol=1e-12)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.data[:, 0], (data[:, 0] * 9.80665).astype(np.float32))


def test_npy_of_the_wrong_shape_is_refused(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((10, 6)))
    with pytest.raises(DataError, match=r"bad\.npy: array of shape \(10, 6\); expected \(N, 7\)"):
        read_imu(tmp_path / "bad.npy")


def test_duplicate_timestamps_keep_the_first_row_and_are_counted(tmp_path):
    p = _rows(tmp_path / "dup.csv", ["0.00,1,0,0,0,0,0", "0.01,2,0,0,0,0,0", "0.01,99,0,0,0,0,0",
                                     "0.01,98,0,0,0,0,0", "0.02,3,0,0,0,0,0", "0.02,97,0,0,0,0,0"])
    rec = read_imu(p)
    assert rec.dropped_duplicates == 3
    np.testing.assert_array_equal(rec.t, [0.0, 0.01, 0.02])
    np.testing.assert_array_equal(rec.data[:, 0], [1, 2, 3])


def test_a_decreasing_timestamp_names_the_file_and_the_data_row(tmp_path):
    p = _rows(tmp_path / "back.csv", ["0.00,0,0,0,0,0,0", "0.01,0,0,0,0,0,0", "0.02,0,0,0,0,0,0",
                                      "0.015,0,0,0,0,0,0", "0.03,0,0,0,0,0,0"])
    with pytest.raises(DataError) as e:
        read_imu(p)
    assert str(e.value).startswith(f"{p}: data row 4: timestamp 0.015 s is earlier than data row 3")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_values_name_the_file_row_and_column(tmp_path, value):
    p = _rows(tmp_path / "nan.csv", ["0.00,0,0,0,0,0,0", "0.01,0,0,0,0,0,0", f"0.02,0,0,0,0,{value},0"])
    with pytest.raises(DataError) as e:
        read_imu(p)
    assert str(e.value).startswith(f"{p}: data row 3, column 'gy': value")
    assert "not finite" in str(e.value)


def test_a_non_number_names_the_file_row_and_column(tmp_path):
    p = _rows(tmp_path / "text.csv", ["0.00,0,0,0,0,0,0", "0.01,0,zero,0,0,0,0"])
    with pytest.raises(DataError, match=r"text\.csv: data row 2, column 'ay': 'zero' is not a number"):
        read_imu(p)


def test_a_short_row_names_the_file_and_row(tmp_path):
    p = _rows(tmp_path / "short.csv", ["0.00,0,0,0,0,0,0", "0.01,0,0,0,0,0,0", "0.02,0,0,0"])
    with pytest.raises(DataError, match=r"short\.csv: data row 3: 4 field\(s\) but the header has 7"):
        read_imu(p)


def test_missing_columns_are_named_with_the_ones_present(tmp_path):
    p = _rows(tmp_path / "cols.csv", ["0,0,0,0,0", "1,0,0,0,0"], header="t,ax,ay,az,gyro")
    with pytest.raises(DataError) as e:
        read_imu(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: missing column(s) ['gx', 'gy', 'gz']")
    assert "['t', 'ax', 'ay', 'az', 'gyro']" in msg


@pytest.mark.parametrize("content,match", [("", "empty"), (HEADER + "\n", "no data rows"),
                                           (HEADER + "\n0,0,0,0,0,0,0\n", "1 data row"),
                                           (HEADER + "\n0,0,0,0,0,0,0\n0,1,1,1,1,1,1\n", "1 distinct timestamp")])
def test_empty_and_too_short_files_are_refused(tmp_path, content, match):
    p = tmp_path / "short.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        read_imu(p)
    assert str(e.value).startswith(str(p))


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(MissingDataError):
        read_imu(tmp_path / "nope.csv")
    (tmp_path / "imu.txt").write_text(HEADER)
    with pytest.raises(DataError, match="unknown IMU file type"):
        read_imu(tmp_path / "imu.txt")


def test_a_gap_longer_than_max_gap_marks_the_samples_inside_invalid_and_flags_the_windows(tmp_path):
    t = np.concatenate([np.arange(0, 600) / 100.0, 6.5 + np.arange(0, 1000) / 100.0])  # 0..5.99, gap, 6.5..16.49
    rec = ImuRecording(tmp_path / "gap.csv", t, np.ones((t.size, 6), np.float32))
    res = resample(rec, 200.0, max_gap_s=0.1)
    times = res.times
    inside = (times > 5.99 + 1e-9) & (times < 6.5 - 1e-9)
    np.testing.assert_array_equal(res.valid, ~inside)
    assert inside.sum() == 101  # 5.995 .. 6.495
    # a larger max_gap_s accepts the gap
    assert resample(rec, 200.0, max_gap_s=0.6).valid.all()
    starts = window_starts(res, 5.0)
    np.testing.assert_array_equal(starts, [0.0, 5.0, 10.0])
    w, ok = windows(res, starts, 1000)
    assert w.shape == (3, 6, 1000) and w.dtype == np.float32
    np.testing.assert_array_equal(ok, [True, False, True])
    assert int((~ok).sum()) == 1  # what a caller counts as skipped


def test_window_starts_are_multiples_of_window_s_wholly_inside_the_recording(tmp_path):
    def rec(t):
        return ImuRecording(tmp_path / "w.csv", t, np.zeros((t.size, 6), np.float32))
    exact = rec(np.arange(2000) / 200.0)  # 0 .. 9.995: exactly two windows
    np.testing.assert_array_equal(window_starts(exact, 5.0), [0.0, 5.0])
    np.testing.assert_array_equal(window_starts(resample(exact), 5.0), [0.0, 5.0])
    late = rec(0.003 + np.arange(2400) / 200.0)  # first sample after 0: window 0 is not produced
    np.testing.assert_array_equal(window_starts(late, 5.0), [5.0])
    np.testing.assert_array_equal(window_starts(resample(late), 5.0), [5.0])
    np.testing.assert_array_equal(window_starts(rec(np.arange(1999) / 200.0), 5.0), [0.0])  # one sample short
    np.testing.assert_array_equal(window_starts(rec(np.array([0.0, 4.0])), 5.0), [])
    at_100hz = rec(0.2 + np.arange(900) / 100.0)  # 0.2 .. 9.19 s
    np.testing.assert_array_equal(window_starts(at_100hz, 2.0), [2.0, 4.0, 6.0])


def test_windows_cut_the_grid_at_the_start_and_flag_windows_outside(tmp_path):
    t = 1.0 + np.arange(800) / 200.0  # 1.0 .. 4.995
    data = np.stack([t * (c + 1) for c in range(6)], 1).astype(np.float32)
    res = resample(ImuRecording(tmp_path / "c.csv", t, data), 200.0)
    w, ok = windows(res, [2.0, 3.0, 4.5, 0.5], 200)
    np.testing.assert_array_equal(w[0], res.data[200:400].T)
    np.testing.assert_array_equal(w[1], res.data[400:600].T)
    np.testing.assert_array_equal(ok, [True, True, False, False])
    np.testing.assert_array_equal(w[2][:, :100], res.data[700:800].T)
    assert not w[2][:, 100:].any() and not w[3][:, :100].any()


def test_column_unit_validation_names_where_and_the_known_units():
    with pytest.raises(ValueError, match=r"my spec: .*acc_unit 'mg' is not a known unit; use one of \['m/s\^2', 'g'\]"):
        ImuColumns.from_dict({"acc_unit": "mg"}, where="my spec")
    with pytest.raises(ValueError, match="time_unit 'min'"):
        ImuColumns(time_unit="min")
    cols = ImuColumns(time="ts", acc=("a", "b", "c"), gyro_unit="deg/s")
    assert ImuColumns.from_dict(cols.to_dict()) == cols


def test_a_60s_200hz_csv_reads_fast(tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(12_000) / 200.0
    p = _write_csv(tmp_path / "long.csv", t, rng.standard_normal((12_000, 6)), fmt="{:.6f}")
    best = min(_timed(read_imu, p) for _ in range(3))
    assert best < 0.1, f"{best * 1e3:.0f} ms"  # ~30 ms on one shared core; the csv-module path takes ~3x


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
