"""The wheel ships fastgan.kernels and fastgan.export and imports from outside the repository."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_imports_outside_repo(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(wheels), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("fastgan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastgan/kernels/__init__.py" in names and "fastgan/export/__init__.py" in names
    assert not any(n.startswith(("kernels/", "export/", "tests/")) for n in names)
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import fastgan, fastgan.kernels, fastgan.export, fastgan.metrics, fastgan.cli;"
            "print(fastgan.__file__); print(fastgan.kernels.__file__); print(fastgan.export.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    for line in r.stdout.split():
        assert line.startswith(str(target)), line


def test_import_fastgan_is_light():
    code = ("import sys, fastgan; heavy = [m for m in ('onnx', 'onnxruntime', 'triton', 'matplotlib', "
            "'fastgan.train', 'fastgan.export') if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
