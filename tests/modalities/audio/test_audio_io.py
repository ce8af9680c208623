"""Audio readers and the dataset index: channel mixdown, resampling, one test per kind of bad input.

Every bad-input test asserts that the message starts with the file (or the CSV and its row).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from modalities.audio.io import (AudioItem, list_audio_files, read_audio, read_manifest, scan_class_folders,
                                 write_manifest, write_wav)
from modalities.errors import DataError, MissingDataError


def _sine(freq_hz, rate_hz, seconds=1.0, amp=0.5):
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _amplitude_at(x, freq_hz, rate_hz=16_000):
    """Amplitude of the sinusoid at ``freq_hz`` in a 1 s clip (Hann-windowed DFT, 1 Hz bins)."""
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    return float(spec[int(round(freq_hz * x.size / rate_hz))]), spec


def test_stereo_48k_is_averaged_to_mono_and_resampled_to_16k(tmp_path):
    left, right = _sine(440, 48_000, amp=0.5), _sine(3000, 48_000, amp=0.3)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, np.stack([left, right], 1), 48_000, subtype="PCM_16")
    x, rate = read_audio(path)
    assert rate == 16_000 and x.dtype == np.float32 and x.shape == (16_000,)
    a440, spec = _amplitude_at(x, 440)
    a3000, _ = _amplitude_at(x, 3000)
    # the mean of the channels: each tone at half its channel amplitude, at its own frequency
    assert a440 == pytest.approx(0.25, abs=0.01) and a3000 == pytest.approx(0.15, abs=0.01)
    spec[[*range(430, 451), *range(2990, 3011)]] = 0
    assert spec.max() < 1e-3  # nothing else: no aliasing, no images


@pytest.mark.parametrize("rate, fmt, subtype", [(8_000, "FLAC", "PCM_16"), (44_100, "WAV", "FLOAT"),
                                                (22_050, "WAV", "PCM_24")])
def test_other_rates_keep_the_frequency_and_are_band_limited(tmp_path, rate, fmt, subtype):
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, _sine(1000, rate, amp=0.6), rate, format=fmt, subtype=subtype)
    x, out_rate = read_audio(path)
    assert out_rate == 16_000 and x.shape == (16_000,)
    a1000, spec = _amplitude_at(x, 1000)
    assert int(np.argmax(spec)) == 1000 and a1000 == pytest.approx(0.6, abs=0.01)
    # Nothing else: no image of the tone (8 kHz source: at 7 kHz), no aliasing.
    spec[990:1011] = 0
    assert spec.max() < 1e-3


def test_16k_mono_passes_through_unchanged_and_clipped_audio_is_valid(tmp_path):
    square = np.where(_sine(500, 16_000) >= 0, 1.0, -1.0).astype(np.float32)  # full-scale, hard-clipped
    path = tmp_path / "clipped.wav"
    sf.write(path, square, 16_000, subtype="FLOAT")
    x, _ = read_audio(path)
    np.testing.assert_array_equal(x, square)


def test_write_wav_round_trip_and_identical_bytes(tmp_path):
    x = _sine(700, 16_000, amp=0.8)
    write_wav(tmp_path / "a.wav", x)
    write_wav(tmp_path / "b.wav", x)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    y, _ = read_audio(tmp_path / "a.wav")
    np.testing.assert_allclose(y, x, atol=1 / 32768)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def _bad_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _sine(300, 16_000), 16_000, subtype="PCM_16")
    flac = tmp_path / "good.flac"
    sf.write(flac, _sine(300, 16_000), 16_000, format="FLAC")
    nan = _sine(300, 16_000)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16_000, subtype="FLOAT")
    zero = tmp_path / "zero_length.wav"
    sf.write(zero, np.zeros((0, 1), np.float32), 16_000, subtype="PCM_16")
    files = {
        "empty.wav": b"",
        "truncated.wav": good.read_bytes()[:20_000],  # header promises 32000 data bytes
        "truncated.flac": flac.read_bytes()[: flac.stat().st_size // 2],
        "header_only.wav": good.read_bytes()[:30],
        "text.wav": b"this is not audio\n" * 20,
        "random.flac": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return sorted(files) + ["nan.wav", "zero_length.wav"]


def test_bad_files_raise_data_error_naming_the_file(tmp_path):
    for name in _bad_files(tmp_path):
        path = tmp_path / name
        with pytest.raises(DataError) as e:
            read_audio(path)
        assert str(e.value).startswith(f"{path}: "), str(e.value)
        assert e.value.path == path


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MissingDataError, match="nope.wav: audio file not found"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError):
        scan_class_folders(tmp_path / "nowhere")
    (tmp_path / "a_folder.wav").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        read_audio(tmp_path / "a_folder.wav")


def _tree(root, layout):
    for rel in layout:
        write_wav(root / rel, np.zeros(160, np.float32))


def test_scan_class_folders_sorted_with_labels_and_speakers(tmp_path):
    _tree(tmp_path, ["yes/spk2_0.wav", "yes/spk1_1.wav", "no/abc123_nohash_0.wav", "no/x.FLAC",
                     "_background_noise_/white.wav"])
    (tmp_path / "yes" / ".spk3_0.wav.tmp").write_bytes(b"partial")  # an interrupted atomic write
    (tmp_path / "yes" / "notes.txt").write_text("ignored")
    items = scan_class_folders(tmp_path)
    assert [(it.path.relative_to(tmp_path).as_posix(), it.label, it.speaker) for it in items] == [
        ("no/abc123_nohash_0.wav", "no", "abc123"), ("no/x.FLAC", "no", None),
        ("yes/spk1_1.wav", "yes", "spk1"), ("yes/spk2_0.wav", "yes", "spk2")]
    (tmp_path / "stop").mkdir()
    with pytest.raises(DataError, match=r"stop: class folder 'stop' holds no"):
        scan_class_folders(tmp_path)
    assert [p.name for p in list_audio_files(tmp_path / "yes")] == ["spk1_1.wav", "spk2_0.wav"]


def test_read_manifest_resolves_paths_relative_to_the_csv(tmp_path):
    _tree(tmp_path / "data", ["clips/a.wav", "clips/b.wav"])
    csv_path = tmp_path / "data" / "train.csv"
    csv_path.write_text(f"path,label,speaker\nclips/a.wav,yes,s1\n{tmp_path / 'data/clips/b.wav'},no,\n")
    items = read_manifest(csv_path)  # the tests run from the repository root, not the CSV's folder
    assert items == [AudioItem(tmp_path / "data/clips/a.wav", "yes", "s1"),
                     AudioItem(tmp_path / "data/clips/b.wav", "no", None)]
    write_manifest(tmp_path / "data" / "copy.csv", items)
    assert read_manifest(tmp_path / "data" / "copy.csv") == items
    assert (tmp_path / "data" / "copy.csv").read_text().splitlines()[1] == "clips/a.wav,yes,s1"


@pytest.mark.parametrize("body, where", [
    ("file,label\nclips/a.wav,yes\n", "row 1 (header): missing column(s) ['path']"),
    ("path,label\nclips/a.wav,yes\nclips/b.wav,\n", "row 3: empty label for 'clips/b.wav'"),
    ("path,label\nclips/gone.wav,yes\n", "row 2: audio file 'clips/gone.wav' not found"),
    ("path,label\nclips/a.wav,yes\nclips/a.wav,no\n", "row 3: 'clips/a.wav' is already listed in row 2"),
    ("path,label\n", "the manifest lists no clips"),
])
def test_read_manifest_errors_name_the_csv_and_row(tmp_path, body, where):
    _tree(tmp_path, ["clips/a.wav", "clips/b.wav"])
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(body)
    with pytest.raises(DataError) as e:
        read_manifest(csv_path)
    assert str(e.value).startswith(f"{csv_path}: {where}")
