"""Offering the load: open-loop arrival streams and closed-loop users, per client.

``OpenLoopSource`` walks the arrival instants of one client (generated from its
rate profile or replayed from a trace, ``sim.arrivals``) as a chain of timeout
callbacks, one event per arrival, and hands each new logical request to a client
instance picked at random. ``start_users`` starts the closed-loop users, who each
wait for their request's outcome and think before the next. Route choice follows
the client's route-mix weights. Requests are created by the world
(``World.new_request``), which keeps the in-flight set and the records.
"""

from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import simpy

from sim.arrivals import generated_arrivals, trace_arrivals

if TYPE_CHECKING:  # pragma: no cover
    from sim.client import ClientInstance
    from sim.world import World


def route_picker(world: "World", client_name: str) -> Callable[[], int]:
    """A function drawing route indexes with the client's route-mix weights."""
    cfg = world.scenario.clients[client_name]
    service = world.services[cfg.target]
    weights = cfg.load.routes or {r: 1.0 for r in service.route_names}
    idx = [service.route_names.index(r) for r in weights]
    if len(idx) == 1:
        only = idx[0]
        return lambda: only
    cum = np.cumsum([weights[r] for r in weights], dtype=float)
    cum_list = (cum / cum[-1]).tolist()
    uniform = world.streams.uniform(f"client.{client_name}.route")
    last = len(idx) - 1

    def pick() -> int:
        return idx[min(bisect.bisect_right(cum_list, uniform.next()), last)]
    return pick


class OpenLoopSource:
    """Arrivals of one open-loop client, whatever happens to earlier requests."""

    def __init__(self, world: "World", client_name: str) -> None:
        self.world = world
        self.env: simpy.Environment = world.env
        cfg = world.scenario.clients[client_name]
        service = world.services[cfg.target]
        self.instances: list["ClientInstance"] = world.clients[client_name]
        self._pick_instance = world.streams.uniform(f"client.{client_name}.instance")
        self._pick_route = route_picker(world, client_name)
        if cfg.load.trace:
            times, routes = trace_arrivals(cfg.load.trace, world.horizon_s)
            self._times: Iterator[float] = iter(times.tolist())
            self._routes: Iterator[int] | None = (
                iter([service.route_names.index(r) for r in routes]) if routes is not None else None)
        else:
            batches = generated_arrivals(cfg.load, world.horizon_s,
                                         world.streams.generator(f"client.{client_name}.arrivals"))
            self._times = itertools.chain.from_iterable(batch.tolist() for batch in batches)
            self._routes = None
        self._next_at: float | None = None

    def start(self) -> None:
        self._schedule_next()

    def _schedule_next(self) -> None:
        at = next(self._times, None)
        if at is None:
            return
        self._next_at = at
        self.env.timeout(max(at - self.env.now, 0.0)).callbacks.append(self._on_arrival)

    def _on_arrival(self, _event: simpy.Event) -> None:
        world = self.world
        env = self.env
        instances = self.instances
        n_instances = len(instances)
        while True:
            if world.stopped:
                return
            inst = instances[int(self._pick_instance.next() * n_instances) if n_instances > 1 else 0]
            route = next(self._routes) if self._routes is not None else self._pick_route()
            inst.start_request(world.new_request(inst, route))
            at = next(self._times, None)
            if at is None:
                return
            if at > env.now:
                env.timeout(at - env.now).callbacks.append(self._on_arrival)
                return


def start_users(world: "World", client_name: str) -> None:
    """The closed-loop users of one client, spread round-robin over its instances."""
    cfg = world.scenario.clients[client_name]
    instances = world.clients[client_name]
    pick_route = route_picker(world, client_name)
    for user in range(cfg.load.users):
        world.env.process(_user(world, client_name, instances[user % len(instances)], user, pick_route))


def _user(world: "World", client_name: str, instance: "ClientInstance", user: int,
          pick_route: Callable[[], int]):
    load = world.scenario.clients[client_name].load
    env = world.env
    think = world.streams.exponential(f"client.{client_name}.user.{user}.think")
    first = world.streams.uniform(f"client.{client_name}.user.{user}.start").next()
    yield env.timeout(first * load.think_time)
    while not world.stopped:
        req = world.new_request(instance, pick_route())
        req.done = env.event()
        instance.start_request(req)
        yield req.done
        if world.stopped:
            return
        pause = load.think_time if load.think == "constant" else load.think_time * think.next()
        if pause > 0:
            yield env.timeout(pause)
