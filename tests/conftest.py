"""Make the top-level scripts (common.py, knapsack_ldf.py, csp_ldf.py) importable from the tests."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
