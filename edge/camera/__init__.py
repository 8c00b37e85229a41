"""Real thermal cameras: raw frame layouts by USB VID:PID (formats.py) and serial control."""
