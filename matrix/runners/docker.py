"""The docker runner: the same cells in a container, on a local or remote engine (DOCKER_HOST).

By default the container is the cheapest one that works (shared/notes/docker.md): an almost empty
"skeleton" image with the host's /usr, Python prefix and project bind-mounted read-only, so nothing
is copied and a run starts in seconds. With `image=` a self-contained image is used instead (for a
remote engine, whose host has not got our files). GPUs come through a DeviceRequest. The container
runs `python -m matrix run --runner local` on the cells and writes results.json inside itself; the
runner copies it back with get_archive (works for remote engines too), then removes the container.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time
from pathlib import Path

from .. import results
from ..cells import Cell
from ..errors import RunnerError
from ..results import CellResult, Failure, RunResult

SKELETON_TAG = "accelerate-lite-matrix-skeleton:1"
RESULTS_DIR = "/matrix-results"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _skeleton_tar() -> bytes:
    """A root file system of empty directories and symlinks into /usr, plus passwd/group (a few KB)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("usr", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "var/tmp", RESULTS_DIR.strip("/")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        for name in ("bin", "sbin", "lib", "lib64"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = f"usr/{name}"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                           ("etc/hosts", "127.0.0.1 localhost\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_skeleton_image(client) -> str:
    """Import the skeleton image into the engine unless it is there; return its tag."""
    import docker

    try:
        client.images.get(SKELETON_TAG)
    except docker.errors.ImageNotFound:
        repository, tag = SKELETON_TAG.split(":")
        # the SDK declares chunked encoding; only an iterator makes requests send real chunks
        client.api.import_image_from_stream(iter([_skeleton_tar()]), repository=repository, tag=tag)
    return SKELETON_TAG


def host_mounts() -> dict:
    """Read-only bind mounts that let the skeleton image run this host's Python and project."""
    paths = {"/usr", sys.base_prefix, sys.prefix, str(PROJECT_ROOT)}
    paths = sorted(p for p in paths if p and os.path.isdir(p))
    keep = [p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]
    return {path: {"bind": path, "mode": "ro"} for path in keep}


def host_environment() -> dict:
    """Variables that make the container import the mounted project, wherever an editable install points."""
    return {"PYTHONPATH": str(PROJECT_ROOT)}


def _read_archive(container, path: str) -> bytes:
    stream, _ = container.get_archive(path)
    data = io.BytesIO(b"".join(stream))
    with tarfile.open(fileobj=data) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        return member.read()


class DockerRunner:
    """Runs cells in one container and reports each result once they are copied back.

    Args:
        settings: RunSettings (examples, seed, world timeout, real devices).
        image: a self-contained image to use; None builds/uses the skeleton image with host mounts.
        gpus: request every GPU through a DeviceRequest (needs the NVIDIA container runtime).
        preset: recorded for the run inside the container.
        client: a docker.DockerClient (default: docker.from_env(), which honours DOCKER_HOST).
        log: called with each line the container prints.
    """

    name = "docker"

    def __init__(self, settings, image=None, gpus=False, preset="quick", client=None, log=None):
        self.settings = settings
        self.image = image
        self.gpus = gpus
        self.preset = preset
        self._client = client
        self.log = log or (lambda line: print(f"  [container] {line}", file=sys.stderr))

    @property
    def client(self):
        if self._client is None:
            try:
                import docker
            except ImportError:
                raise RunnerError("the docker runner needs the Docker SDK: pip install 'accelerate-lite[docker]'") from None
            try:
                self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:  # noqa: BLE001 - reported as a result
                raise RunnerError(f"no Docker engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')} "
                                  f"({exc}); start dockerd or set DOCKER_HOST") from None
        return self._client

    def command(self, cells: list[Cell]) -> list[str]:
        cmd = [sys.executable if self.image is None else "python3", "-m", "matrix", "run", "--runner", "local",
               "--out", RESULTS_DIR, "--no-progress", "--preset", self.preset,
               "--examples", str(self.settings.examples), "--seed", str(self.settings.seed),
               "--world-timeout", str(self.settings.world_timeout)]
        if self.settings.real:
            cmd.append("--real")
        for cell in cells:
            cmd += ["--cell", cell.id]
        return cmd

    def run(self, cells: list[Cell], on_result=lambda result: None) -> list[CellResult]:
        import docker

        client = self.client
        image = self.image or ensure_skeleton_image(client)
        kwargs = {"network_mode": "none", "detach": True, "working_dir": "/tmp", "shm_size": "1g",
                  "environment": {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200",
                                  "MATRIX_RUNNER": "docker"}}
        if self.image is None:
            kwargs["volumes"] = host_mounts()
            kwargs["environment"].update(host_environment())
        if self.gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        started = time.perf_counter()
        container = client.containers.create(image, self.command(cells), **kwargs)
        lines = []
        try:
            try:
                container.start()
            except docker.errors.APIError as exc:
                hint = " (--gpus needs the NVIDIA container runtime on the engine's host)" if self.gpus else ""
                raise RunnerError(f"the Docker engine could not start the container: {exc.explanation or exc}{hint}") from None
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    lines.append(line)
                    self.log(line)
            status = container.wait().get("StatusCode")
            try:
                run = RunResult.loads(_read_archive(container, f"{RESULTS_DIR}/results.json").decode())
            except Exception as exc:  # noqa: BLE001 - no results: the container died before writing them
                return self._all_errors(cells, f"container exited {status} without results ({exc})",
                                        "\n".join(lines[-60:]), time.perf_counter() - started, on_result)
        finally:
            container.remove(force=True)
        by_id = run.by_id()
        out = []
        for cell in cells:
            result = by_id.get(cell.id) or CellResult(cell.id, results.ERROR, failure=Failure(
                message="the container's results do not contain this cell"))
            on_result(result)
            out.append(result)
        return out

    def _all_errors(self, cells, message, log_tail, duration, on_result):
        out = []
        for cell in cells:
            result = CellResult(cell.id, results.ERROR, duration=duration / max(1, len(cells)),
                                failure=Failure(message=message, traceback=log_tail))
            on_result(result)
            out.append(result)
        return out


__all__ = ["DockerRunner", "ensure_skeleton_image", "host_mounts"]
