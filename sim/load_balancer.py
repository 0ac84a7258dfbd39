"""Load balancers: which instance of the callee an attempt goes to.

Pure objects: the caller passes the candidate hosts (the instances not ejected by
outlier detection), each host's outstanding attempts, and uniform draws.

- ``round_robin``: the next host in turn, skipping ejected ones (Envoy ROUND_ROBIN
  with equal weights; gRPC round_robin).
- ``random``: a host drawn uniformly (Envoy RANDOM; what kube-proxy's iptables mode
  does per connection).
- ``least_request``: the host with the fewest outstanding attempts; ties go to the
  lowest index (a full scan, the limit of Envoy's LEAST_REQUEST choice count).
- ``p2c``: power of two choices: two distinct hosts drawn at random, the one with
  fewer outstanding attempts wins (Envoy LEAST_REQUEST's default choice_count = 2;
  Mitzenmacher's result: the maximum load drops from log n / log log n to
  log log n).
"""

from __future__ import annotations

from typing import Callable, Sequence

BALANCERS = ("round_robin", "random", "least_request", "p2c")


class LoadBalancer:
    __slots__ = ("kind", "n_hosts", "_next", "_uniform")

    def __init__(self, kind: str, n_hosts: int, uniform: Callable[[], float]) -> None:
        if kind not in BALANCERS:
            raise ValueError(f"load balancer {kind!r}: expected one of {', '.join(BALANCERS)}")
        if n_hosts < 1:
            raise ValueError(f"a load balancer needs at least one host, got {n_hosts}")
        self.kind = kind
        self.n_hosts = n_hosts
        self._next = 0
        self._uniform = uniform

    def pick(self, outstanding: Sequence[int], usable: Sequence[int] | None = None) -> int:
        """The host for the next attempt. ``outstanding[h]`` = attempts on host h; ``usable`` =
        the hosts allowed (None = all)."""
        n = self.n_hosts
        if n == 1:
            return 0
        hosts = usable if usable is not None and len(usable) < n else None
        kind = self.kind
        if kind == "round_robin":
            if hosts is None:
                h = self._next
                self._next = (h + 1) % n
                return h
            for _ in range(n):
                h = self._next
                self._next = (h + 1) % n
                if h in hosts:
                    return h
            return hosts[0]
        candidates = hosts if hosts is not None else range(n)
        m = len(candidates)
        if kind == "random":
            return candidates[min(int(self._uniform() * m), m - 1)]
        if kind == "least_request":
            return min(candidates, key=lambda h: outstanding[h])
        # p2c: two distinct draws
        if m == 1:
            return candidates[0]
        i = min(int(self._uniform() * m), m - 1)
        j = min(int(self._uniform() * (m - 1)), m - 2)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if outstanding[a] <= outstanding[b] else b
