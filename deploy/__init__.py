"""Deploy: fine-tuned range-view segmenter -> verified ONNX bundle -> FP16/INT8 -> TensorRT / ONNX Runtime.

Modules (DESIGN.md section 6):

- ``export``   run folder -> bundle (``model.onnx``, ``metadata.json``, ``report.md``), parity-gated
- ``quantize`` FP16 and INT8 explicit-QDQ variants, each measured on the held-out scans
- ``tensorrt`` strongly typed TensorRT engines, cached per TensorRT + GPU + L4T (optional dependency)
- ``runtime``  bundle + raw scan -> per-point labels (no torch), ``bench`` latency/memory reports
- ``cli``      ``add_deploy_commands(subparsers)``: export / quantize / bench / infer

Import rule: ``deploy`` may import ``modalities`` but never ``pipelines``; only ``export``,
``model`` and ``bench``'s torch backend import torch (lazily), so the Jetson image runs without it.
"""
