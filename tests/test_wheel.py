"""The built wheel is the whole engine: installed into a fresh venv, the dev server runs.

The wheel is built from a copy of the sources (a build writes into the tree it
builds), installed with its dependencies into a new venv, and ``python -m
actors dev --once`` runs in a folder outside the repository, with its data in
a temporary folder: the example definitions and activities must come from
the installed package, not from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Building, creating the venv, installing the dependencies (from the package
#: index or pip's cache): each gets this long before the test fails.
STEP_TIMEOUT = 300
#: The examples on a fresh nats-server take seconds; this is the bound.
DEV_TIMEOUT = 180


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
    return result


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in ("actors", "transport"):
        shutil.copytree(REPO / package, source / package, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=source,
        timeout=STEP_TIMEOUT,
    )
    (wheel,) = wheels.glob("actors-*.whl")
    return wheel


def test_the_wheel_installed_in_a_fresh_venv_runs_the_examples(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    for name in ("count.yaml", "order.yaml", "refund.yaml", "activities.py"):
        assert f"actors/examples/{name}" in packaged, f"the wheel lacks actors/examples/{name}"
    # The web UI's templates and static files are package data too.
    for name in ("templates/base.html", "templates/instance.html", "static/ui.css", "static/ui.js"):
        assert f"actors/http/ui/{name}" in packaged, f"the wheel lacks actors/http/ui/{name}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=STEP_TIMEOUT)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=tmp_path,
        timeout=STEP_TIMEOUT,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    ran = _run(
        [
            str(python),
            "-m",
            "actors",
            "dev",
            "--once",
            "--data",
            str(data),
            "--api-port",
            "0",
            "--count",
            "20",
        ],
        cwd=elsewhere,
        timeout=DEV_TIMEOUT,
    )
    out = ran.stdout
    # The package, not the checkout: ``actors`` imported from the venv.
    where = _run(
        [str(python), "-c", "import actors.examples; print(actors.examples.__file__)"],
        cwd=elsewhere,
        timeout=STEP_TIMEOUT,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    assert "web UI        http://127.0.0.1:" in out, out
    for definition in (
        "count v1  (count.yaml)",
        "order v3  (order.yaml)",
        "refund v1  (refund.yaml)",
    ):
        assert f"registered    {definition}" in out, out
    outcomes = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith(("order-", "refund-"))
    }
    assert sorted(outcomes.values()) == sorted(
        ["completed", "completed", "cancelled", "failed", "failed", "completed", "cancelled"]
    ), out
    assert "count x20             20 of 20 returned {'count': 3}" in out, out
    assert out.rstrip().endswith("stopped"), out
    assert (data / "nats").is_dir(), "the server's store is not in the data folder given"
    assert not (elsewhere / "data").exists(), "dev wrote into the working folder"
