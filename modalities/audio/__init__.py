"""Audio modality: keyword-spotting data (readers, dataset index, generator), the log-mel front-end
and waveform / spectrogram augmentations (DESIGN 5.4).

Modules (none imports torch at import time, so the robot runtime can use them torch-free):

* :mod:`.io`: ``read_audio`` (WAV/FLAC -> float32 mono at 16 kHz), ``write_wav`` (atomic),
  ``scan_class_folders`` and ``read_manifest`` (the dataset index).
* :mod:`.logmel`: :class:`LogMelSpec`, the front-end contract, with its numpy implementation;
  :mod:`.logmel_torch` is the torchaudio twin used in training (imports torch).
* :mod:`.keywords`: the espeak-ng keyword dataset generator (Speech Commands-like folders).
* :mod:`.augment`: small seeded augmentations (crop/pad, gain, shift, noise, SpecAugment masks).
"""
