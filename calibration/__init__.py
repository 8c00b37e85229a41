"""INT8 calibration: data, entropy/percentile thresholds, Q/DQ export, TensorRT cache."""
