"""tools/faults.sh: the fault-injection script parses, and its security kinds pass against a live tir run."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "faults.sh"


def test_faults_script_is_valid_bash_with_one_function_per_kind():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    for kind in ("malformed_http", "cross_origin_post", "tampered_bundle"):
        assert f"fault_{kind}() {{" in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="tools/faults.sh needs curl")
def test_faults_script_security_kinds_pass():
    if not (Path(sys.executable).parent / "tir").exists() and shutil.which("tir") is None:
        pytest.skip("no tir entry point installed")
    done = subprocess.run(["bash", str(SCRIPT), "cross_origin_post", "tampered_bundle"],
                          capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len([x for x in lines if x.startswith("PASS ")]) == 11
    assert not [x for x in lines if x.startswith("FAIL ")]


def test_faults_script_refuses_an_unknown_kind():
    done = subprocess.run(["bash", str(SCRIPT), "no_such_kind"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL no_such_kind: unknown fault kind; known: ")
    assert "cross_origin_post" in done.stdout
