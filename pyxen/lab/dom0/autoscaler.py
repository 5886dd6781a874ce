"""The autoscaling benchmark's scaler as a pure state machine: events in
(an invocation arrives, an instance is up or failed to start, an invocation
finished, time passed), actions out (create an instance, run an invocation
on an instance, destroy an instance, give up on an invocation).  The dom0
driver (pyxen.lab.dom0.autoscale) performs the actions and feeds the
events back; tests drive it with no Xen at all.

Policy, as FaaS platforms do: an invocation takes an idle instance of its
function; else it waits in its function's queue, and a new instance is
created unless enough are already starting for everyone waiting (a cold
start).  An instance that comes up, or whose invocation ends, serves the
head of its function's queue, or idles; an instance idle for ``keep_alive_s``
is destroyed.  A create that fails is never retried: the invocation it was
for fails, and is counted.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    GONE = "gone"


@dataclass
class Instance:
    func: int
    state: State = State.STARTING
    idle_since: float = 0.0


@dataclass(frozen=True)
class Create:
    instance: int
    func: int


@dataclass(frozen=True)
class Run:
    invocation: int
    instance: int


@dataclass(frozen=True)
class Destroy:
    instance: int


@dataclass(frozen=True)
class Fail:
    invocation: int
    reason: str


Action = Create | Run | Destroy | Fail


class ScalerError(RuntimeError):
    """An event that contradicts the scaler's state (a driver bug)."""


@dataclass
class Autoscaler:
    keep_alive_s: float
    instances: dict[int, Instance] = field(default_factory=dict)
    waiting: dict[int, deque[int]] = field(default_factory=dict)
    _next_id: int = 0

    def _instance(self, inst: int, *states: State) -> Instance:
        i = self.instances.get(inst)
        if i is None or i.state not in states:
            raise ScalerError(f"instance {inst} is {i.state.value if i else 'unknown'}, "
                              f"expected {' or '.join(s.value for s in states)}")
        return i

    def _starting(self, func: int) -> int:
        return sum(1 for i in self.instances.values()
                   if i.func == func and i.state is State.STARTING)

    def _serve(self, inst: int, now: float) -> list[Action]:
        """Instance ``inst`` is free: run the head of its queue, or idle."""
        i = self.instances[inst]
        queue = self.waiting.get(i.func)
        if queue:
            i.state = State.BUSY
            return [Run(queue.popleft(), inst)]
        i.state, i.idle_since = State.IDLE, now
        return []

    def arrive(self, invocation: int, func: int, now: float) -> list[Action]:
        for inst, i in sorted(self.instances.items()):
            if i.func == func and i.state is State.IDLE:
                i.state = State.BUSY
                return [Run(invocation, inst)]
        queue = self.waiting.setdefault(func, deque())
        queue.append(invocation)
        if self._starting(func) >= len(queue):
            return []
        inst, self._next_id = self._next_id, self._next_id + 1
        self.instances[inst] = Instance(func)
        return [Create(inst, func)]

    def started(self, inst: int, now: float) -> list[Action]:
        self._instance(inst, State.STARTING)
        return self._serve(inst, now)

    def start_failed(self, inst: int, now: float) -> list[Action]:
        """The create of ``inst`` failed: it is gone, and if fewer instances
        are now starting than invocations wait, the newest waiting one fails."""
        i = self._instance(inst, State.STARTING)
        i.state = State.GONE
        queue = self.waiting.get(i.func)
        if queue and self._starting(i.func) < len(queue):
            return [Fail(queue.pop(), f"the create of instance {inst} failed")]
        return []

    def finished(self, inst: int, now: float) -> list[Action]:
        self._instance(inst, State.BUSY)
        return self._serve(inst, now)

    def next_expiry(self) -> float | None:
        """When the earliest idle instance's keep-alive ends."""
        times = [i.idle_since + self.keep_alive_s for i in self.instances.values()
                 if i.state is State.IDLE]
        return min(times) if times else None

    def expire(self, now: float) -> list[Action]:
        out: list[Action] = []
        for inst, i in sorted(self.instances.items()):
            # The same sum as next_expiry(), so that its time always expires.
            if i.state is State.IDLE and now >= i.idle_since + self.keep_alive_s:
                i.state = State.GONE
                out.append(Destroy(inst))
        return out

    def drain(self) -> list[Action]:
        """At the end of the trace: destroy every idle instance (busy and
        starting ones are destroyed as they finish: call again)."""
        out: list[Action] = []
        for inst, i in sorted(self.instances.items()):
            if i.state is State.IDLE:
                i.state = State.GONE
                out.append(Destroy(inst))
        return out

    def live(self) -> int:
        return sum(1 for i in self.instances.values() if i.state is not State.GONE)
