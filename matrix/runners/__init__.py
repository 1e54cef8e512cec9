"""Runners: where cells run. local (this machine, simulated or real devices), docker (a container), ci (emit)."""

from .local import LocalRunner, RunSettings


def make_runner(name: str, settings: RunSettings, args=None):
    """The runner called `name` ("local" or "docker") for these settings."""
    if name == "local":
        return LocalRunner(settings)
    if name == "docker":
        from .docker import DockerRunner

        return DockerRunner(settings, image=getattr(args, "docker_image", None), gpus=getattr(args, "gpus", False),
                            preset=getattr(args, "preset", None) or "quick")
    raise ValueError(f"unknown runner {name!r}; expected 'local' or 'docker'")


__all__ = ["LocalRunner", "RunSettings", "make_runner"]
