"""Engine adapters behind one small interface (see base.py); ``select.open_backend`` picks one."""
