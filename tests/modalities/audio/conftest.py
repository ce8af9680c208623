"""Shared audio fixtures: espeak-ng speech (skipped cleanly without espeak-ng) and one tiny keyword set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from modalities.audio.keywords import KeywordDatasetConfig, generate_keyword_dataset

# 3 words x (2 train + 1 test voices) x 1 take, pool: 3 voices x 4 texts; about 2 s of espeak-ng.
TINY = dict(words=("yes", "no", "up"), train_voices=2, test_voices=1, takes=1, pool_voices=1,
            pool_extra_texts=("hello",), seed=7)


@pytest.fixture(scope="session")
def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    return exe


@pytest.fixture(scope="session")
def tiny_keywords(espeak, tmp_path_factory) -> tuple[Path, KeywordDatasetConfig, dict]:
    cfg = KeywordDatasetConfig(**TINY)
    root = tmp_path_factory.mktemp("keywords_a")
    return root, cfg, generate_keyword_dataset(root, cfg)


@pytest.fixture(scope="session")
def speech_clip(espeak) -> np.ndarray:
    """'seven' by espeak-ng en-us+m3, 16 kHz, padded to 1 s (the word starts at 0.2 s)."""
    from modalities.audio.io import resample_poly_to
    from modalities.audio.keywords import synthesize, trim_silence

    raw, rate = synthesize("seven", "en-us+m3")
    x = resample_poly_to(trim_silence(raw, rate), rate, 16_000)
    out = np.zeros(16_000, np.float32)
    out[3200:3200 + min(x.size, 12_800)] = x[:12_800]
    return out
