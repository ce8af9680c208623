import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)  # configs/ paths in tests are relative to the repo root
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
