"""Augmentations: exact lengths, seeded replay, inputs never modified, masks on the right axis (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalities.audio.augment import freq_mask, mix_background, random_crop_or_pad, random_gain, time_mask, time_shift


def test_random_crop_or_pad_is_a_window_or_the_whole_clip_and_replays():
    x = np.arange(1, 20_001, dtype=np.float32)
    crop = random_crop_or_pad(x, 16_000, np.random.default_rng(0))
    assert crop.shape == (16_000,) and np.all(np.diff(crop) == 1)  # a contiguous window
    np.testing.assert_array_equal(crop, random_crop_or_pad(x, 16_000, np.random.default_rng(0)))
    short = x[:9000]
    starts = set()
    for seed in range(5):
        out = random_crop_or_pad(short, 16_000, np.random.default_rng(seed))
        nz = np.flatnonzero(out)
        np.testing.assert_array_equal(out[nz], short)  # the whole clip, intact, somewhere in the second
        starts.add(int(nz[0]))
    assert len(starts) > 1
    assert x[0] == 1 and x.size == 20_000


def test_gain_and_shift():
    x = np.random.default_rng(3).standard_normal(16_000).astype(np.float32)
    for seed in range(3):
        ratio = random_gain(x, np.random.default_rng(seed), (-6, 6)) / x
        g_db = np.random.default_rng(seed).uniform(-6, 6)  # the draw, replayed
        np.testing.assert_allclose(ratio, 10 ** (g_db / 20), rtol=1e-5)  # an amplitude gain of g dB
    for seed in range(6):
        y = time_shift(x, np.random.default_rng(seed), max_shift=400)
        s = int(np.random.default_rng(seed).integers(-400, 401))
        if s > 0:
            assert not y[:s].any() and np.array_equal(y[s:], x[:-s])  # zero-filled, not wrapped
        elif s < 0:
            assert not y[s:].any() and np.array_equal(y[:s], x[-s:])


@pytest.mark.parametrize("snr", [0.0, 12.0])
def test_mix_background_hits_the_snr(snr):
    rng = np.random.default_rng(4)
    x = (0.3 * np.sin(np.arange(16_000) / 7)).astype(np.float32)
    noise = rng.standard_normal(5000).astype(np.float32)  # shorter than the clip: tiled
    y = mix_background(x, noise, np.random.default_rng(0), (snr, snr))
    added = (y - x).astype(np.float64)
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert measured == pytest.approx(snr, abs=0.01)
    np.testing.assert_array_equal(mix_background(np.zeros(100, np.float32), noise, rng), 0)


@pytest.mark.parametrize("as_torch", [False, True])
def test_spec_augment_masks_whole_rows_and_columns(as_torch):
    base = np.random.default_rng(5).standard_normal((2, 64, 101)).astype(np.float32) + 10
    x = torch.from_numpy(base.copy()) if as_torch else base.copy()
    t = time_mask(x, np.random.default_rng(1), max_width=10, n_masks=2, fill=0.0)
    f = freq_mask(x, np.random.default_rng(1), max_width=8, n_masks=2, fill=0.0)
    t, f = (np.asarray(v) for v in (t, f))
    np.testing.assert_array_equal(np.asarray(x), base)  # input untouched
    cols = np.flatnonzero((t == 0).all(axis=(0, 1)))
    rows = np.flatnonzero((f == 0).all(axis=(0, 2)))
    assert (t == 0).sum() == cols.size * 2 * 64 and 0 < cols.size <= 20
    assert (f == 0).sum() == rows.size * 2 * 101 and 0 < rows.size <= 16
    np.testing.assert_array_equal(t, time_mask(base, np.random.default_rng(1), max_width=10, n_masks=2))
