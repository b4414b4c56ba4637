"""fastnn asv benchmarks (see common.py for the shared shapes, data and thread setup)."""
