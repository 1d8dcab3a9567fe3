"""Make the repository root importable for the tests (the modules are flat files there)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
