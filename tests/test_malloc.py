"""imckit._malloc: the allocator thresholds change where memory comes from, never a result."""
import ctypes
import subprocess
import sys

import pytest


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc mallopt only")

CODE = """
import resource, torch
from imckit import imc, _malloc
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
A = torch.randint(-8, 8, (300, 40), generator=g); X = torch.randint(0, 16, (64, 300), generator=g)
y = imc.mvm(A, X, imc.IMCConfig.jia22_16nm(seed=3), generator=torch.Generator().manual_seed(1))
torch.empty(12_000_000).fill_(1.0)               # 48 MB: above glibc's default mmap threshold
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(12_000_000).fill_(1.0)           # freed and allocated again
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(_malloc._done, faults, float(y.double().sum()), float((y.double() ** 2).sum()))
"""


def _run(env_value):
    env = {"IMCKIT_MALLOC_TUNE": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    return out[0], int(out[1]), out[2:]


def test_tuning_is_applied_saves_page_faults_and_changes_no_result():
    on, faults_on, y_on = _run("1")
    off, faults_off, y_off = _run("off")
    assert (on, off) == ("True", "False")            # applied by importing imckit.imc; opt-out works
    assert y_on == y_off                              # bit-identical results
    # untuned, each of the ten 48 MB tensors is a fresh mmap: ~11,700 page faults per touch;
    # tuned, the memory is reused (at most one touch's worth of faults when the heap top moves)
    assert faults_off > 50_000 and faults_on < faults_off / 4, (faults_on, faults_off)
