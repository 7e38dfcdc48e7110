"""Executors run a backend over N host slots in flight (double-buffering with N=2)."""
