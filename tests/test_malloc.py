"""imckit._malloc: the allocator thresholds change where memory comes from, never a result."""
import subprocess
import sys

import pytest

CODE = """
import torch
from imckit import imc, _malloc
g = torch.Generator().manual_seed(0)
A = torch.randint(-8, 8, (300, 40), generator=g); X = torch.randint(0, 16, (64, 300), generator=g)
y = imc.mvm(A, X, imc.IMCConfig.jia22_16nm(seed=3), generator=torch.Generator().manual_seed(1))
print(_malloc._done, float(y.double().sum()), float((y.double() ** 2).sum()))
"""


def _run(env_value):
    env = {"IMCKIT_MALLOC_TUNE": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return out[0], out[1:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_tuning_is_applied_and_changes_no_result():
    on, y_on = _run("1")
    off, y_off = _run("0")
    assert (on, off) == ("True", "False")            # applied by importing imckit.imc; opt-out works
    assert y_on == y_off                              # bit-identical results
