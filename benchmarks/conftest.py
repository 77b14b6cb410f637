import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Benchmarks use random-weight encoders only; never let a hub call retry for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
