"""The log-mel front-end: numpy twin vs torchaudio on real clips, crop/pad, silence, statistics, serialisation.

Agreement measure (also in modalities/audio/logmel.py): max |numpy - torch| over the
un-normalised log-mel of a clip, divided by the std of the torch log-mel of that clip.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio

from modalities.audio.keywords import coloured_noise
from modalities.audio.logmel import LogMelSpec, dataset_stats, fit_normalisation, mel_filterbank
from modalities.audio.logmel_torch import TorchLogMel

SPEC = LogMelSpec()


def _disagreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.std(b))


def test_defaults_are_design_5_4():
    assert (SPEC.sample_rate_hz, SPEC.n_fft, SPEC.hop_length, SPEC.n_mels, SPEC.f_min_hz, SPEC.f_max_hz) == (
        16_000, 1024, 160, 64, 60.0, 7800.0)
    assert SPEC.clip_samples == 16_000 and SPEC.n_frames == 101 and SPEC.feature_shape == (64, 101)


def test_filterbank_matches_torchaudio_htk():
    ref = torchaudio.functional.melscale_fbanks(513, 60.0, 7800.0, 64, 16_000, norm=None, mel_scale="htk")
    ours = mel_filterbank(16_000, 1024, 64, 60.0, 7800.0)
    np.testing.assert_allclose(ours, ref.double().numpy(), atol=1e-5)  # torchaudio computes in float32


def test_numpy_matches_torch_on_espeak_speech(speech_clip):
    ours = SPEC.log_mel(speech_clip)
    ref = TorchLogMel(SPEC, normalise=False)(torch.from_numpy(speech_clip)).numpy()
    assert ours.shape == ref.shape == (64, 101)
    assert _disagreement(ours, ref) < 1e-4
    assert np.ptp(ref) > 10  # a real word: loud frames and silence, not a flat clip


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_numpy_matches_torch_on_noise_batched_and_normalised(colour):
    rng = np.random.default_rng(1)
    waves = np.stack([0.05 * coloured_noise(16_000, colour, rng) for _ in range(3)]).astype(np.float32)
    spec = SPEC.with_stats(-4.0, 3.0)
    ref_raw = TorchLogMel(spec, normalise=False)(torch.from_numpy(waves)).numpy()
    assert max(_disagreement(a, b) for a, b in zip(spec.log_mel(waves), ref_raw)) < 1e-4
    ref = TorchLogMel(spec)(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(spec(waves), ref, atol=1e-4 / 3.0 * np.std(ref_raw))


def test_silent_and_clipped_clips_give_finite_features(speech_clip):
    spec = SPEC.with_stats(-5.0, 4.0)
    silent = np.zeros(16_000, np.float32)
    for feats in (spec(silent), TorchLogMel(spec)(torch.from_numpy(silent)).numpy()):
        assert np.isfinite(feats).all()
        np.testing.assert_allclose(feats, (np.log(spec.eps) + 5.0) / 4.0, rtol=1e-5)
    clipped = np.clip(speech_clip * 50, -1, 1)
    assert np.isfinite(spec(clipped)).all()


def test_crop_is_centred_and_padding_is_at_the_end():
    long = np.arange(20_000, dtype=np.float32)
    np.testing.assert_array_equal(SPEC.fix_length(long), long[2000:18_000])
    short = np.ones(10_000, np.float32)
    padded = SPEC.fix_length(short)
    assert padded.shape == (16_000,) and padded[:10_000].all() and not padded[10_000:].any()
    for x in (long, short):  # the torch path crops and pads identically
        np.testing.assert_array_equal(SPEC.fix_length(torch.from_numpy(x)).numpy(), SPEC.fix_length(x))
    assert SPEC.log_mel(short).shape == TorchLogMel(SPEC)(torch.from_numpy(long)).shape == (64, 101)


def test_dataset_stats_and_fit_normalisation(speech_clip, tmp_path):
    rng = np.random.default_rng(2)
    clips = [speech_clip, 0.1 * coloured_noise(12_000, "pink", rng).astype(np.float32)]
    stacked = np.stack([SPEC.log_mel(c) for c in clips]).astype(np.float64)
    mean, std = dataset_stats(clips, SPEC)
    assert mean == pytest.approx(stacked.mean(), rel=1e-9) and std == pytest.approx(stacked.std(), rel=1e-9)
    from modalities.audio.io import write_wav

    write_wav(tmp_path / "s.wav", speech_clip, subtype="FLOAT")
    assert dataset_stats([tmp_path / "s.wav"], SPEC) == pytest.approx(dataset_stats([speech_clip], SPEC))
    fitted = fit_normalisation(SPEC, clips)
    feats = np.stack([fitted(c) for c in clips])
    assert feats.mean() == pytest.approx(0, abs=1e-5) and feats.std() == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="std is 0"):
        dataset_stats([np.zeros(16_000, np.float32)], SPEC)


def test_spec_round_trip_and_errors_name_the_field():
    spec = LogMelSpec(n_mels=40, f_max_hz=7600, mean=-3.5, std=2.25)
    back = LogMelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.to_dict() == spec.to_dict() and back.feature_shape == (40, 101)
    d = spec.to_dict()
    for bad, msg in (({"kind": "mfcc"}, "bundle.json: kind 'mfcc'"), ({"version": 2}, "spec version 2"),
                     ({"n_fft": "big"}, "field 'n_fft' = 'big' is not an integer"),
                     ({"hop_length": 160.5}, "field 'hop_length'"),
                     ({"f_max_hz": 9000}, "field 'f_max_hz' = 9000.0 is invalid"),
                     ({"std": 0}, "field 'std'")):
        with pytest.raises(ValueError, match=msg):
            LogMelSpec.from_dict({**d, **bad}, "bundle.json")
    del d["eps"]
    with pytest.raises(ValueError, match="bundle.json: missing field 'eps'"):
        LogMelSpec.from_dict(d, "bundle.json")


def test_runtime_modules_do_not_import_torch():
    code = ("import sys, modalities.audio, modalities.audio.logmel, modalities.audio.io, "
            "modalities.audio.augment, modalities.audio.keywords; "
            "import numpy as np; from modalities.audio.logmel import LogMelSpec; LogMelSpec()(np.zeros(16000)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
