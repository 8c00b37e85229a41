"""tir-edge: real-time thermal (LWIR) video restoration pipeline.

One import namespace, ``tir``; the card's folders are mapped onto it:
``tir.edge`` -> edge/, ``tir.engines`` -> engines/, ``tir.calibration`` -> calibration/,
``tir.tools`` -> tools/.
"""
from setuptools import setup

FOLDERS = {
    "tir.edge": "edge",
    "tir.edge.sources": "edge/sources",
    "tir.edge.camera": "edge/camera",
    "tir.edge.pipeline": "edge/pipeline",
    "tir.edge.outputs": "edge/outputs",
    "tir.engines": "engines",
    "tir.engines.backends": "engines/backends",
    "tir.engines.models": "engines/models",
    "tir.engines.training": "engines/training",
    "tir.engines.training.models": "engines/training/models",
    "tir.calibration": "calibration",
    "tir.tools": "tools",
}

setup(
    name="tir-edge",
    version="0.1.0",
    description="Real-time thermal (LWIR) video restoration: capture, restore, stream, benchmark",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=list(FOLDERS),
    package_dir=FOLDERS,
    package_data={
        "tir.edge.outputs": ["web/*"],
        "tir.engines": ["bundles/*/*", "specs/*.json"],
    },
    include_package_data=True,
    install_requires=[
        "numpy>=1.22",
        # On a Jetson keep JetPack's system OpenCV (it has GStreamer): install with
        # `pip install --no-deps .` and `pip install numpy onnxruntime pyserial tqdm`; see README.
        "opencv-python>=4.8",
        "onnxruntime>=1.16",
        "pyserial>=3.5",
        "tqdm>=4.60",
        # the HTTP output's server (request parsing, limits, backlog); <4: see edge/outputs/http.py
        "aiohttp>=3.9,<4",
    ],
    extras_require={
        "train": ["torch>=2.1", "onnx>=1.14", "matplotlib>=3.5"],
        # tir calibrate --student --qat-steps loads student.onnx into torch (engines/training/qat.py). onnx2torch
        # imports torchvision, whose build must match torch's: PyPI's torchvision 0.28.0 beside torch 2.13.0+cpu
        # fails at import ("operator torchvision::nms does not exist"); torch 2.14.1 + torchvision 0.29.1 work
        "qat": ["torch>=2.1", "onnx>=1.14", "onnx2torch>=1.5"],
        # TensorRT and pycuda come from JetPack on the device; imported lazily.
        "jetson": ["pycuda>=2022.1"],
        # tir discover's tree and exemplar plots (the JSON report needs nothing extra)
        "discover": ["matplotlib>=3.5"],
        "test": [
            "pytest>=7",
            "torch>=2.1",
            "onnx>=1.14",
            "matplotlib>=3.5",
            "selenium>=4.10",
        ],
    },
    entry_points={"console_scripts": ["tir=tir.tools.cli:main"]},
)
