"""A wheel built from the repository, installed without ``-e`` into a fresh virtual environment, runs
the shipped scene and experiment from an unrelated folder (configs come from the package, not from
the source tree). The environment borrows the test interpreter's third-party packages through a
``.pth`` line (no downloads) and installs only the wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(command, cwd, timeout=600):
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=environment)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, wsim script) of a venv holding only the wheel of this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy, so that the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("wsim", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels,
          source], cwd=base)
    wheel = next(wheels.glob("wsim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsim/py.typed" in names and "wsim/geometry/tetmesh.py" in names
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).stdout.strip())
    # the test interpreter's packages (torch, warp, ...), after the venv's own: the wheel's wsim wins
    borrowed = [entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages"))]
    (site / "borrowed.pth").write_text("".join(f"{entry}\n" for entry in borrowed))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=base)
    location = _run([python, "-c", "import wsim; print(wsim.__file__)"], cwd=base).stdout.strip()
    assert Path(location).is_relative_to(venv), location
    return python, venv / "bin" / "wsim"


def test_wheel_runs_the_shipped_scene_from_another_folder(installed, tmp_path):
    _, wsim = installed
    out = tmp_path / "drop"
    result = _run([wsim, "simulate", "box-drop", "--no-video", "--device", "cpu", "--out", out], cwd=tmp_path)
    assert (out / "rollout.npz").is_file(), result.stdout
    assert "CUDA driver" not in result.stderr


def test_wheel_runs_the_shipped_experiment_from_another_folder(installed, tmp_path):
    _, wsim = installed
    out = tmp_path / "mass"
    tiny = ["optim.iterations=2", "optim.polish_iterations=0", "scene.sim.frames=6", "scene.sim.substeps=4",
            "scene.sim.dt=0.004", "render.resolution=16", "randomize.shapes=[box]", "loss.horizon_start=2",
            "loss.horizon_iterations=1", "render.video_scale=1"]
    command = [wsim, "run", "rigid-mass", "--device", "cpu", "--quiet", "--out", out]
    for setting in tiny:
        command += ["--set", setting]
    # two steps cannot converge: the run writes its results and says so with exit status 1
    result = subprocess.run([str(c) for c in command], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "OMP_NUM_THREADS": "1"})
    assert list(out.rglob("results.json")), f"{result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.returncode == 1 and "NOT CONVERGED" in result.stderr, result.stderr
