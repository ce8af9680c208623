"""The BEV deploy adapter's numpy side: grid mapping, outputs, metric (no torch, no bundle)."""

import numpy as np

from deploy.tasks.bev_segmentation import BevSegmentation, cells_in_grid
from modalities.bev_labels import BevGridSpec
from modalities.lidar.bev_spec import PillarBevSpec


def test_label_cells_map_to_the_student_cell_holding_their_centre():
    label = BevGridSpec((-4.0, 4.0), (-4.0, 4.0), 0.5)  # 16 x 16
    spec = PillarBevSpec(x_range_m=(-2.0, 2.0), y_range_m=(-1.0, 3.0), cell_size_m=0.5)  # 8 x 8, off-centre
    label_cells, student_cells = cells_in_grid(label, spec.grid)
    assert len(label_cells) == 64 and len(np.unique(student_cells)) == 64
    centers = label.cell_centers_lidar().reshape(-1, 2)[label_cells]
    ix, iy = student_cells % spec.nx, student_cells // spec.nx
    assert np.allclose(centers[:, 0], -2.0 + (ix + 0.5) * 0.5) and np.allclose(centers[:, 1], -1.0 + (iy + 0.5) * 0.5)


def test_postprocess_write_and_metric(tmp_path):
    spec = PillarBevSpec(x_range_m=(-2.0, 2.0), y_range_m=(-2.0, 2.0), cell_size_m=0.5)
    meta = {"task": {"input": spec.to_dict(), "label_grid": BevGridSpec((-2.0, 2.0), (-2.0, 2.0), 0.5).to_dict()},
            "model": {"num_classes": 6, "classes": ["a", "b", "c", "d", "e", "f"]}}
    adapter = BevSegmentation(meta)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 6, 8, 8)).astype(np.float32)
    pred = adapter.postprocess({"logits": logits}, {})
    assert pred.shape == (8, 8) and (pred == logits[0].argmax(0)).all()
    dest = adapter.write(pred, tmp_path / "scan.pcd.bin", tmp_path / "out")
    assert dest.name == "scan.bev.npy" and (np.load(dest) == pred).all() and (tmp_path / "out" / "scan.bev.png").is_file()


def test_bev_runtime_imports_without_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nimport deploy.runtime, deploy.tasks.bev_segmentation, deploy.tasks.camera_bev_segmentation\n"
            "from deploy.tasks import adapter_class\n"
            "assert adapter_class('bev_segmentation').kind == 'bev_segmentation'\n"
            "assert adapter_class('camera_bev_segmentation').kind == 'camera_bev_segmentation'\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_camera_adapter_reads_a_frame_and_names_its_outputs(tmp_path):
    from deploy.tasks.camera_bev_segmentation import CameraBevSegmentation
    from tests.modalities.camera.test_bev_inputs import SPEC, _frame

    meta = {"task": {"input": SPEC.to_dict(), "label_grid": SPEC.grid.to_dict()},
            "model": {"num_classes": 6, "classes": ["a", "b", "c", "d", "e", "f"]}}
    adapter = CameraBevSegmentation(meta)
    frame = _frame(tmp_path)
    feeds, _ = adapter.preprocess(adapter.read(frame))
    ny, nx = SPEC.grid.shape
    assert feeds["images"].shape == (1, 2, 3, 32, 64) and feeds["sample_grid"].shape == (1, 2, 2 * ny, nx, 2)
    assert feeds["valid"].shape == (1, 2, 2, ny, nx)
    again, _ = adapter.preprocess(adapter.read(frame))
    assert again["sample_grid"].base is feeds["sample_grid"].base  # a fixed rig: the geometry is computed once
    pred = adapter.postprocess({"logits": np.random.default_rng(0).normal(size=(1, 6, ny, nx))}, None)
    dest = adapter.write(pred, frame, tmp_path / "out")
    assert dest.name == "f.bev.npy" and (tmp_path / "out" / "f.bev.png").is_file()
    label_cells, student_cells = cells_in_grid(adapter.label_grid, adapter.grid)
    assert len(label_cells) == ny * nx and (np.sort(student_cells) == np.arange(ny * nx)).all()
