"""The espeak-ng keyword generator: layout, voice-disjoint splits, byte-identical determinism, resume.

The espeak-ng tests skip (with the install hint) where espeak-ng is absent; the missing-binary
message is tested everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from modalities.audio import keywords
from modalities.audio.io import list_audio_files, read_audio, read_manifest, scan_class_folders
from modalities.audio.keywords import (ESPEAK_VARIANTS, KEYWORDS, EspeakError, KeywordDatasetConfig, _clip_rng,
                                       assign_voices, generate_keyword_dataset, render_clip)
from modalities.fileio import sha256_file


def _hashes(root):
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_config_is_the_design_keyword_set_split_by_voice():
    cfg = KeywordDatasetConfig()
    assert cfg.words == KEYWORDS and len(KEYWORDS) == 20 and "nine" in KEYWORDS and "go" in KEYWORDS
    voices = assign_voices(KeywordDatasetConfig(train_voices=60, val_voices=10, test_voices=20, pool_voices=6))
    pairs = {split: {(v.language, v.variant) for v in vs} for split, vs in voices.items()}
    assert sum(len(p) for p in pairs.values()) == 96  # every voice a distinct (language, variant)
    assert {v.variant for v in voices["train"]} <= set(ESPEAK_VARIANTS)
    with pytest.raises(ValueError, match="field 'train_voices'"):
        KeywordDatasetConfig(train_voices=90, test_voices=10)
    with pytest.raises(ValueError, match="field 'words'"):
        KeywordDatasetConfig(words=("yes", "yes"))
    assert KeywordDatasetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_layout_and_clips(tiny_keywords):
    root, cfg, meta = tiny_keywords
    assert meta["complete"] and meta["counts"] == {"train": 6, "test": 3, "pool": 12}
    train = scan_class_folders(root / "train")
    assert sorted({it.label for it in train}) == sorted(cfg.words)
    assert read_manifest(root / "train.csv") == sorted(train, key=lambda it: (cfg.words.index(it.label), it.path))
    for item in train[:3]:
        x, rate = read_audio(item.path)
        assert rate == 16_000 and x.shape == (16_000,) and 0.05 < np.abs(x).max() <= 0.9
        assert np.sqrt(np.mean(x ** 2)) > 1e-3  # speech, not silence
    pool = list_audio_files(root / "pool")
    assert len(pool) == 12 and read_audio(pool[0])[0].shape == (24_000,)  # 1.5 s pool clips
    assert "hello" in (root / "pool.csv").read_text()


def test_test_voices_never_appear_in_training_or_the_pool(tiny_keywords):
    root, _, meta = tiny_keywords
    speakers = {split: {it.speaker for it in scan_class_folders(root / split)} for split in ("train", "test")}
    pool = {p.stem.rsplit("_", 1)[0] for p in list_audio_files(root / "pool")}
    assert speakers["train"] == set(meta["voices"]["train"]) and speakers["test"] == set(meta["voices"]["test"])
    assert not speakers["train"] & speakers["test"]
    assert not pool & speakers["test"] and speakers["train"] <= pool
    lang_variant = {split: {s.split("-s")[0] for s in ids} for split, ids in speakers.items()}
    assert not lang_variant["train"] & lang_variant["test"]  # not just another speed/pitch of a training voice


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tiny_keywords, tmp_path):
    root, cfg, _ = tiny_keywords
    # In a fresh interpreter with another string-hash seed: nothing may depend on process state.
    code = ("import json, sys; from modalities.audio.keywords import KeywordDatasetConfig, generate_keyword_dataset; "
            "generate_keyword_dataset(sys.argv[1], KeywordDatasetConfig.from_dict(json.loads(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again"), json.dumps(cfg.to_dict())], check=True,
                   timeout=300, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert _hashes(tmp_path / "again") == _hashes(root)
    # Another seed: other voices, and other room / noise / jitter draws for the same voice and word.
    other = KeywordDatasetConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})
    assert assign_voices(other) != assign_voices(cfg)
    voice = assign_voices(cfg)["train"][0]
    clips = [render_clip("yes", voice, c, 1.0, _clip_rng(c.seed, "train/v/yes/0")) for c in (cfg, cfg, other)]
    assert np.array_equal(clips[0], clips[1]) and not np.allclose(clips[0], clips[2])


def test_an_interrupted_run_is_finished_reusing_the_written_clips(tiny_keywords, tmp_path):
    root, cfg, _ = tiny_keywords
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    want = _hashes(copy)
    victim = sorted((copy / "test").rglob("*.wav"))[0]
    victim.unlink()
    (victim.parent / f".{victim.name}.abc.tmp").write_bytes(b"half a clip")  # what a killed write leaves
    (copy / "test.csv").unlink()
    meta = generate_keyword_dataset(copy, cfg)
    assert meta["written_now"] == 1
    (victim.parent / f".{victim.name}.abc.tmp").unlink()
    assert _hashes(copy) == want
    with pytest.raises(ValueError, match="dataset.json: this folder was generated with another config"):
        generate_keyword_dataset(copy, KeywordDatasetConfig(**{**cfg.__dict__, "takes": 2}))


def test_missing_espeak_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(keywords.shutil, "which", lambda name: None)
    with pytest.raises(EspeakError, match=r"install espeak-ng: apt-get install espeak-ng"):
        generate_keyword_dataset(tmp_path, KeywordDatasetConfig(words=("yes",), train_voices=1, test_voices=1))
    with pytest.raises(EspeakError, match="apt-get install espeak-ng"):
        keywords.synthesize("yes", "en")


def test_espeak_failure_is_reported_with_its_command(espeak):
    with pytest.raises(EspeakError, match="-v xx-nonexistent.*does not exist"):
        keywords.synthesize("yes", "xx-nonexistent")


@pytest.mark.slow
def test_default_size_dataset(espeak, tmp_path):
    """The default set (20 words x 11 voices x 2 takes + 480 pool clips): about 2 minutes of espeak-ng."""
    meta = generate_keyword_dataset(tmp_path, KeywordDatasetConfig(), workers=2)
    assert meta["counts"] == {"train": 320, "test": 120, "pool": 480}
    assert len(scan_class_folders(tmp_path / "test")) == 120
