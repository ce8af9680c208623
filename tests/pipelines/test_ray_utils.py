"""Starting Ray: a local run never attaches to a stale cluster address left on disk."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_local_start_ignores_a_stale_cluster_address_file():
    """Ray records the last cluster in <tmp>/ray/ray_current_cluster; a dead one made every run fail."""
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are length-limited
    try:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")  # nothing listens there
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(tmp)}
        code = ("from pipelines.config import RayConfig\nfrom pipelines.ray_utils import ensure_ray\nimport ray\n"
                "ensure_ray(RayConfig(num_cpus=1, include_dashboard=False))\n"
                "print('cpus', ray.cluster_resources()['CPU'])\nray.shutdown()\n")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "cpus 1.0" in proc.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
