"""IMU modality: readers, the window spec and augmentations for video-to-IMU distillation (DESIGN 5.2, COMODO).

Modules (io, spec and augment are numpy-only, so the robot runtime can use them torch-free):

* :mod:`.io`: ``read_imu`` (CSV/NPY -> SI units, checked), ``resample`` (uniform 200 Hz grid, gap
  marking), ``window_starts`` and ``windows`` (5 s windows aligned with the video clips).
* :mod:`.spec`: :class:`ImuWindowSpec`, the input contract (``prepare(path)`` is the runtime's whole
  path), and ``fit_stats`` (per-channel normalisation).
* :mod:`.augment`: jitter, scaling, sensor-frame rotation and time warping of one raw window.
* :mod:`.students`: the IMU student networks (imports torch).
"""
