"""The docker runner against a real Docker engine that this test starts (and stops) privately."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from matrix import results
from matrix.cells import Cell
from matrix.runners.docker import DockerRunner, host_environment, host_mounts
from matrix.runners.local import RunSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    """A dockerd with its own data-root, exec-root and socket under a temp dir (flags: shared/notes/docker.md)."""
    docker = pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("dockerd is not installed here (apt-get install docker.io; .ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix="matrix-dockerd-"))
    (root / "run").mkdir()
    sock = root / "run" / "docker.sock"
    log = open(root / "dockerd.log", "w")  # noqa: SIM115 - dockerd writes to it until the fixture ends
    process = subprocess.Popen(
        [dockerd, "--storage-driver=overlay2", "--iptables=false", "--bridge=none", f"--data-root={root / 'data'}",
         f"--exec-root={root / 'exec'}", f"--pidfile={root / 'run' / 'dockerd.pid'}", "-H", f"unix://{sock}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            client = docker.DockerClient(base_url=f"unix://{sock}")  # asks the engine's API version at once
            client.ping()
            break
        except Exception:  # noqa: BLE001 - reported as a result
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (root / "dockerd.log").read_text()[-800:]
                pytest.skip(f"dockerd could not be started here (exit {process.poll()}): {tail}")
            time.sleep(0.3)
    yield client
    client.close()
    process.terminate()  # dockerd alone first: it stops containerd and unmounts its data-root itself
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()
    data = root / "data"
    if os.path.ismount(data):
        subprocess.run(["umount", "--lazy", str(data)], check=False)
    shutil.rmtree(root, ignore_errors=True)


def test_cells_run_in_a_container_and_their_results_come_back(engine):
    cells = [Cell.parse("gather/no/none/w2/gloo/cpu"), Cell.parse("reduce/bf16/none/w2/gloo/8xH100"),
             Cell.parse("gather/no/none/w8/gloo/2xT4")]
    lines, seen = [], []
    runner = DockerRunner(RunSettings(examples=3, world_timeout=300), client=engine, log=lines.append)
    got = {r.cell_id: r for r in runner.run(cells, on_result=seen.append)}
    assert [r.cell_id for r in seen] == [c.id for c in cells]
    assert got["gather/no/none/w2/gloo/cpu"].status == results.PASSED, got["gather/no/none/w2/gloo/cpu"].failure
    assert got["reduce/bf16/none/w2/gloo/8xH100"].status == results.PASSED
    assert got["gather/no/none/w8/gloo/2xT4"].status == results.NOT_APPLICABLE
    assert got["gather/no/none/w2/gloo/cpu"].examples == 3
    assert any("PASS gather/no/none/w2/gloo/cpu" in line for line in lines)  # the container's own report
    assert engine.containers.list(all=True) == []  # removed after the results were copied out


def test_the_container_sees_the_host_python_read_only(engine):
    from matrix.runners.docker import ensure_skeleton_image

    image = ensure_skeleton_image(engine)
    import sys

    out = engine.containers.run(image, [sys.executable, "-c", "import matrix, torch; print(torch.__version__)"],
                                volumes=host_mounts(), network_mode="none", remove=True, working_dir="/tmp",
                                environment={"HOME": "/tmp", **host_environment()})
    import torch

    assert out.decode().strip() == torch.__version__
    assert all(mount["mode"] == "ro" for mount in host_mounts().values())


def test_gpus_on_an_engine_without_the_nvidia_runtime_is_a_clear_error(engine):
    from matrix.errors import RunnerError

    if "nvidia" in (engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime: the request would succeed")
    runner = DockerRunner(RunSettings(examples=1), client=engine, gpus=True, log=lambda line: None)
    with pytest.raises(RunnerError, match="NVIDIA container runtime"):
        runner.run([Cell.parse("gather/no/none/w2/gloo/cpu")])
    assert engine.containers.list(all=True) == []  # the Created container was removed
