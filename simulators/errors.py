"""Exceptions raised by the simulators package (hardware profiles and worlds)."""


class SimulatorError(Exception):
    """Base class of every error the simulators raise."""


class ProfileError(SimulatorError, ValueError):
    """A hardware profile is unknown, malformed, or cannot be applied."""


class UnknownProfileError(ProfileError, KeyError):
    """No profile of that name is registered."""

    def __str__(self):  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ProfileActiveError(ProfileError):
    """A profile is applied while another one is still active in this process."""


class FakeDeviceError(SimulatorError, RuntimeError):
    """A simulated device cannot be created or used as asked."""


# --- worlds (simulators/world.py) ------------------------------------------------------


def _rank_list(ranks) -> str:
    ranks = sorted(ranks)
    if not ranks:
        return "no rank"
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


# Frames of the world's own machinery, dropped from the stacks shown to users.
_MACHINERY = ("simulators/_rank.py", "simulators/_protocol.py", "simulators/_zygote.py", "simulators/_collectives.py",
              "<frozen runpy>", '"<string>", line 1 in <module>')


def trim_stack(stack: str) -> str:
    """Drop the world's own frames from a faulthandler dump so the user's frames stand out."""
    kept = [line for line in stack.splitlines() if not any(m in line for m in _MACHINERY)]
    return "\n".join(kept)


class WorldError(SimulatorError, RuntimeError):
    """A world could not run a call to completion on every rank."""

    def __reduce__(self):  # keyword-built errors must survive pickling (xdist, multiprocessing)
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls, args, state):
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class WorldStartError(WorldError):
    """The ranks of a world could not start or join their process group."""


class WorldClosedError(WorldError):
    """A call was made on a world after close()."""


class ProtocolError(WorldError):
    """A controller, zygote or rank sent a message the receiver does not know."""


class RankError(WorldError):
    """One or more ranks raised; ``failures`` maps each to its formatted traceback."""

    def __init__(self, fn_name, size, failures, exc_types, messages, exceptions=None, stopped=(), collectives=None,
                 stacks=None):
        self.fn_name = fn_name
        self.size = size
        self.failures = dict(sorted(failures.items()))
        self.exc_types = dict(exc_types)
        self.messages = dict(messages)
        self.exceptions = dict(exceptions or {})
        self.stopped = tuple(sorted(stopped))
        self.collectives = dict(sorted((collectives or {}).items()))
        self.stacks = dict(sorted((stacks or {}).items()))  # of the stopped ranks
        lines = [f"{fn_name} raised on {len(self.failures)} of {size} ranks ({_rank_list(self.failures)})"]
        if self.stopped:
            lines[0] += f"; {_rank_list(self.stopped)} had not finished and were stopped, the world was rebuilt"
            for rank, name in self.collectives.items():
                lines.append(f"  rank {rank} was blocked in torch.distributed.{name}")
        for ranks, text in _group_tracebacks(self.failures).items():
            first = ranks[0]
            lines.append(f"--- {_rank_list(ranks)}: {self.exc_types[first]}: {self.messages[first]}")
            lines.append(text.rstrip())
        super().__init__("\n".join(lines))


def _group_tracebacks(failures: dict) -> dict:
    """``{(ranks...): traceback}``: ranks that failed the same way are shown once (the first one's text)."""
    groups = {}
    for rank, text in failures.items():
        header, _, rest = text.partition("\n")
        body = rest if header.startswith("rank ") and rest else text  # drop "rank r of n (pid p):"
        groups.setdefault(body, []).append(rank)
    return {tuple(ranks): failures[ranks[0]] for ranks in groups.values()}


class WorldTimeout(WorldError, TimeoutError):
    """A call missed its deadline; ``stacks`` holds every rank's Python stack."""

    def __init__(self, fn_name, timeout, arrived, missing, stacks, collectives):
        self.fn_name = fn_name
        self.timeout = timeout
        self.arrived = tuple(sorted(arrived))
        self.missing = tuple(sorted(missing))
        self.stacks = dict(sorted(stacks.items()))
        self.collectives = dict(sorted(collectives.items()))
        lines = [
            f"{fn_name} did not finish within {timeout:g} s: {_rank_list(self.missing)} did not finish, "
            f"{_rank_list(self.arrived)} did. The ranks were killed and the world rebuilt; "
            "raise the deadline with run(..., timeout=seconds) if the work is just slow."
        ]
        for rank in self.missing:
            where = self.collectives.get(rank)
            lines.append(f"  rank {rank}: " + (f"blocked in torch.distributed.{where}" if where else "not in a collective"))
        for rank, stack in self.stacks.items():
            lines.append(f"--- rank {rank} stack (most recent call first):")
            lines.append(trim_stack(stack).rstrip() or "  <no stack dumped>")
        super().__init__("\n".join(lines))


class RankCrashed(WorldError):
    """A rank process died (exit, signal, segfault) while running a call."""

    def __init__(self, fn_name, rank, exitcode, signal, crashed=None, output=""):
        self.fn_name = fn_name
        self.rank = rank
        self.exitcode = exitcode
        self.signal = signal
        self.crashed = dict(sorted((crashed or {rank: (exitcode, signal)}).items()))
        self.output = output
        parts = []
        for r, (code, sig) in self.crashed.items():
            parts.append(f"rank {r} {_describe_exit(code, sig)}")
        message = f"{fn_name}: " + "; ".join(parts) + ". The world was rebuilt for the next call."
        if output.strip():
            message += f"\n--- rank {rank} stderr (tail):\n{trim_stack(output).rstrip()}"
        super().__init__(message)


def _describe_exit(exitcode, signal):
    if signal is not None:
        import signal as _signal

        try:
            name = _signal.Signals(signal).name
        except ValueError:
            name = f"signal {signal}"
        return f"was killed by {name} ({signal})"
    if exitcode is None:
        return "died (exit status unknown)"
    return f"exited with code {exitcode}"
