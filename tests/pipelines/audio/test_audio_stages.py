"""Audio stage pieces: dataset splits, cached log-mels, views, pseudo-labels, the layered student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalities.audio.io import AudioItem, write_manifest, write_wav
from modalities.audio.logmel import LogMelSpec
from modalities.audio.students import AudioCNN
from modalities.errors import DataError
from pipelines.audio.data import (ViewParams, crop_frames, equaliser_db, eval_input, load_arrays, load_splits,
                                  make_view, noise_log_mel, read_log_mels, save_arrays, stretch_time, warp_frequency)
from pipelines.audio.unfused import LayeredStudent, pseudo_labels, purity
from pipelines.datasets import KeywordsDatasetSpec

RATE = 16_000


def _tone(freq: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _folders(root, words=("yes", "no"), voices=("a", "b"), split="train"):
    for w, f in zip(words, (440.0, 1200.0, 2500.0)):
        for v in voices:
            write_wav(root / split / w / f"{v}_0.wav", _tone(f, seed=hash((w, v)) % 1000))


def test_splits_from_class_folders_and_manifests(tmp_path):
    _folders(tmp_path, split="train")
    _folders(tmp_path, voices=("c",), split="test")
    (tmp_path / "pool").mkdir()
    write_wav(tmp_path / "pool" / "x_0.wav", _tone(300.0, 1.5))
    s = load_splits(tmp_path, KeywordsDatasetSpec(root=tmp_path))
    assert (len(s.train), len(s.test), len(s.pool), s.classes) == (4, 2, 1, ["no", "yes"])
    # A manifest wins over the folder; a test label never seen in training is an error naming it.
    write_manifest(tmp_path / "test.csv", [AudioItem(tmp_path / "test" / "yes" / "c_0.wav", "maybe", "c")])
    with pytest.raises(DataError, match="maybe"):
        load_splits(tmp_path, KeywordsDatasetSpec(root=tmp_path))
    with pytest.raises(DataError, match="valid"):
        load_splits(tmp_path, KeywordsDatasetSpec(root=tmp_path, test="valid"))


def test_unreadable_clip_is_a_counted_skip(tmp_path):
    write_wav(tmp_path / "ok.wav", _tone(440.0))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    mels, skipped = read_log_mels([tmp_path / "ok.wav", tmp_path / "bad.wav"], LogMelSpec(), crop=True)
    assert mels[0].shape == (64, 101) and mels[1] is None
    assert len(skipped) == 1 and "bad.wav" in skipped[0]


def test_eval_input_is_the_runtime_front_end(tmp_path):
    """Evaluation feeds the network exactly what the robot's numpy front-end computes from the file."""
    spec = LogMelSpec().with_stats(-3.0, 4.0)
    for seconds in (1.0, 0.6):  # a full clip and one padded at the end
        wave = _tone(800.0, seconds)
        write_wav(tmp_path / "c.wav", wave)
        mel, _ = read_log_mels([tmp_path / "c.wav"], spec, crop=True)
        from modalities.audio.io import read_audio
        np.testing.assert_allclose(eval_input(mel[0], spec), spec(read_audio(tmp_path / "c.wav")[0]), atol=1e-5)


def test_arrays_round_trip_and_crops(tmp_path):
    arrays = [np.random.default_rng(i).normal(size=(4, n)).astype(np.float32) for i, n in enumerate((5, 9, 3))]
    save_arrays(tmp_path / "a.npz", arrays, np.array([2, 0, 1]))
    back, labels = load_arrays(tmp_path / "a.npz")
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back)) and labels.tolist() == [2, 0, 1]
    short = crop_frames(arrays[2], 6, None, -9.0)
    assert short.shape == (4, 6) and np.all(short[:, 3:] == -9.0) and np.array_equal(short[:, :3], arrays[2])
    assert np.array_equal(crop_frames(arrays[1], 5, None, 0.0), arrays[1][:, 2:7])  # centred


def test_views_are_seeded_augmented_and_normalised():
    spec = LogMelSpec().with_stats(-2.0, 3.0)
    m = spec.log_mel(_tone(500.0, 1.5), crop=False)
    other = spec.log_mel(_tone(3000.0, 1.0, seed=3), crop=False)
    p = ViewParams(gain_db=6.0, noise_mix=1.0, freq_mask=8, time_mask=10)
    a = make_view(m, 40, spec, np.random.default_rng(0), p, other)
    b = make_view(m, 40, spec, np.random.default_rng(0), p, other)
    c = make_view(m, 40, spec, np.random.default_rng(1), p, other)
    assert a.shape == (64, 40) and np.array_equal(a, b) and not np.array_equal(a, c)
    plain = make_view(m, 151, spec, np.random.default_rng(0), ViewParams(0.0, 0.0, 0, 0))
    np.testing.assert_allclose(plain, (m - spec.mean) / spec.std, rtol=1e-6)


def test_time_stretch_and_frequency_warp():
    m = np.random.default_rng(0).normal(size=(64, 50)).astype(np.float32)
    np.testing.assert_allclose(stretch_time(m, 1.0), m, atol=1e-6)
    slow = stretch_time(m, 1.2)
    assert slow.shape == (64, 60)
    np.testing.assert_allclose(slow[:, [0, -1]], m[:, [0, -1]], atol=1e-6)  # same start and end, more frames
    np.testing.assert_allclose(warp_frequency(m, 1.0), m, atol=1e-6)
    peak = np.zeros((64, 3), np.float32)
    peak[20] = 1.0
    assert int(np.argmax(warp_frequency(peak, 1.25)[:, 0])) == 25  # bin k reads bin k / 1.25: the peak moves up
    assert int(np.argmax(warp_frequency(peak, 0.8)[:, 0])) == 16


def test_equaliser_and_noise_are_random_per_view():
    spec = LogMelSpec()
    rng = np.random.default_rng(0)
    curves = [equaliser_db(64, 10.0, rng) for _ in range(50)]
    assert all(c.shape == (64, 1) and np.abs(c).max() <= 20.0 + 1e-4 for c in curves)
    tilts = [float(c[-1, 0] - c[0, 0]) for c in curves]
    assert min(tilts) < -5.0 and max(tilts) > 5.0  # both directions drawn
    slopes, totals = [], []
    for _ in range(40):
        n = noise_log_mel((64, 400), spec, total_power=2.5, rng=rng)
        totals.append(np.exp(n.astype(np.float64)).sum(axis=0).mean())
        band = n.mean(axis=1)
        slopes.append(band[56:].mean() - band[8:16].mean())
    np.testing.assert_allclose(np.mean(totals), 2.5, rtol=0.05)  # the requested mean summed band power
    assert min(slopes) < -1.0 and max(slopes) > 0.0  # brown-ish and white-ish spectra both drawn


def test_acoustic_view_augmentations_change_the_spectrum_not_the_shape():
    spec = LogMelSpec().with_stats(-2.0, 3.0)
    wave = _tone(500.0, 1.0)
    wave[8000:] = 0.0  # half a second of digital silence: log(eps) until noise is added
    m = spec.log_mel(wave, crop=False)
    p = ViewParams(0.0, 0.0, 0, 0, time_stretch=0.2, freq_warp=0.1, tilt_db=10.0, noise_prob=1.0, noise_snr_db=(0.0, 5.0))
    views = [make_view(m, 80, spec, np.random.default_rng(i), p) for i in range(6)]
    assert all(v.shape == (64, 80) and np.isfinite(v).all() for v in views)
    plain = make_view(m, 80, spec, np.random.default_rng(0), ViewParams(0.0, 0.0, 0, 0))
    floor = (np.log(spec.eps) - spec.mean) / spec.std
    assert (plain <= floor + 1e-3).mean() > 0.1 and all((v <= floor + 1e-3).mean() < 0.01 for v in views)  # noise fills
    spectra = np.stack([v.mean(axis=1) for v in views])
    assert spectra.std(axis=0).mean() > 0.2  # the views' average spectra differ


def test_pseudo_labels_recover_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(4, 16))
    truth = np.repeat(np.arange(4), 30)
    feats = centres[truth] + rng.normal(0, 0.5, size=(120, 16))
    labels = pseudo_labels(feats, 4, 8, seed=0)
    assert purity(labels, [str(t) for t in truth]) == 100.0
    assert purity(np.zeros(120, int), [str(t) for t in truth]) == 25.0


def test_layered_student_heads_and_backbone():
    torch.manual_seed(0)
    net = LayeredStudent(AudioCNN((8, 16, 16, 24)), num_classes=5).eval()
    x = torch.randn(3, 1, 64, 101)
    head_logits, head_feats, logits, feats = net(x)
    assert [h.shape for h in head_logits] == [(3, 5)] * 3 and [f.shape for f in head_feats] == [(3, 24)] * 3
    # The final features are the backbone's embedding (what is saved and deployed), the logits its classifier's.
    assert torch.allclose(feats, net.backbone(x)) and torch.allclose(logits, net.classifier(net.backbone(x)))
