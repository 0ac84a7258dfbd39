"""HTTP/2 on the wire: the client's connection pool and streams, the server's streams, flow control.

Go's bundled HTTP/2 (semantics.md §2-§3), as the engine models it:

Client (``H2Pool``, one per client process):
- a request takes a stream on the first connection with room (streams open plus
  resets awaiting their PING ack below the server's MAX_CONCURRENT_STREAMS; 100
  assumed until the server's SETTINGS arrive one round trip after the connection
  is ready);
- with no room anywhere, a request dials a connection of its own
  (``StrictMaxConcurrentStreams`` false, Go's default); when a dial lands and
  another connection has room, the new one is closed unused. That is the dial
  race of EXP E11: 300 blocked requests on a 250-stream server gave streams
  [250, 50] and 49 redundant TCP+TLS connections. With the strict setting a
  request waits (FIFO) for a slot on the existing connection instead;
- a timed-out or cancelled stream is reset (RST_STREAM CANCEL) and the
  connection is kept; the reset stream holds its slot until the PING sent with
  the reset is acknowledged, one round trip later (``pendingResets``);
- a stream the server never processed (its connection closed under it, GOAWAY)
  is retried at once on another connection, whatever the method;
- a connection with no stream for ``IdleConnTimeout`` is closed.

Server (``H2ServerConn``, one per accepted HTTP/2 connection): two goroutines per
connection (the serve loop and the frame reader) and one per running handler.
Handlers still running after their stream was reset count against
MAX_CONCURRENT_STREAMS; streams beyond it wait, and more than four times that many
waiting earns GOAWAY ENHANCE_YOUR_CALM and a closed connection (the rapid-reset
defence). A client's RST_STREAM cancels the handler's context. ``WriteTimeout``
is per stream from its start: when it fires the stream is reset
(RST_STREAM INTERNAL_ERROR), the connection lives on, and the handler's context is
not cancelled (EXP E10, Go 1.19). ``IdleTimeout`` (falling back to
``ReadTimeout``) closes a connection with no stream, with GOAWAY.

Bodies move window by window (``sim.h2_flow``): a request body against the
server's windows (1 MiB per stream and per connection in Go; 65,535 until the
server's SETTINGS arrive), a response body against the client's (4 MiB and
1 GiB). The receiver returns credit as it consumes: the client reads every
response at once; a handler reads its request body first unless the route says
it leaves it unread, in which case credit returns only when the stream closes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from sim.h2_flow import SPEC_INITIAL_WINDOW, Inflow, Outflow, Transfer

if TYPE_CHECKING:  # pragma: no cover
    from sim.client import Attempt, ClientInstance
    from sim.connection import Conn, Message

INITIAL_MAX_CONCURRENT_STREAMS = 100   # x/net http2 transport: assumed until SETTINGS arrive
MAX_UNPROCESSED_RETRIES = 6            # x/net http2 roundTripViaPool: GOAWAY / REFUSED_STREAM retries
HEADERS_BYTES = 512                    # a HEADERS frame's share of the wire (serialisation, loss)


class H2ClientConn:
    """The client's state of one HTTP/2 connection."""

    __slots__ = ("max_streams", "streams", "pending_resets", "usable", "idle_since", "idle_timer",
                 "send", "send_stream_window", "recv_conn", "settings_known")

    def __init__(self, client_conn_window: int) -> None:
        self.max_streams = INITIAL_MAX_CONCURRENT_STREAMS
        self.streams: dict = {}            # attempts with an open stream here (a dict: ordered, so runs repeat)
        self.pending_resets = 0
        self.usable = True                 # no GOAWAY, not closed
        self.idle_since = 0.0
        self.idle_timer = None
        self.send = Outflow(SPEC_INITIAL_WINDOW)          # request bodies, against the server's windows
        self.send_stream_window = SPEC_INITIAL_WINDOW
        self.recv_conn = Inflow(client_conn_window)       # response bodies, our connection window
        self.settings_known = False

    def slots_used(self) -> int:
        return len(self.streams) + self.pending_resets

    def has_room(self) -> bool:
        return self.usable and len(self.streams) + self.pending_resets < self.max_streams


class H2ServerConn:
    """The server's state of one HTTP/2 connection."""

    __slots__ = ("streams", "running", "unstarted", "recv_conn", "send", "client_stream_window",
                 "idle_timer", "idle_since", "goaway", "bodies")

    def __init__(self, server_conn_window: int, client_stream_window: int, client_conn_window: int) -> None:
        self.streams: dict = {}            # attempt -> Exchange (None while it waits to start)
        self.running = 0                   # handlers running, reset streams' included
        self.unstarted: deque = deque()    # attempts waiting for a handler slot
        self.recv_conn = Inflow(server_conn_window)
        self.send = Outflow(client_conn_window)
        self.client_stream_window = client_stream_window
        self.idle_timer = None
        self.idle_since = 0.0
        self.goaway = False
        self.bodies: dict = {}             # attempt -> its request body (BodyTransfer) while the stream lives


class BodyTransfer(Transfer):
    """A body in flight on one stream, with the receiver's stream window and what happens at the end."""

    __slots__ = ("recv", "consumes", "blocked_since", "blocked_s", "attempt", "exchange", "done",
                 "buffered", "status")

    def __init__(self, n_bytes: int, send_window: int, recv_window: int, attempt: Any, now: float,
                 consumes: bool) -> None:
        super().__init__(n_bytes, send_window, attempt, now)
        self.recv = Inflow(recv_window)
        self.consumes = consumes           # the receiver reads the data as it arrives
        self.blocked_since: float | None = None
        self.blocked_s = 0.0               # time the windows held the sender back
        self.attempt = attempt
        self.exchange = None
        self.done = False
        self.buffered = 0                  # arrived, not yet consumed (no credit returned for it)
        self.status = 0                    # a response body: the status of its response


def pump(world: Any, conn: "Conn", outflow: Outflow, tr: BodyTransfer, to_peer: Any, on_chunk: Any,
         busy: bool) -> None:
    """Send what the windows allow of ``tr`` now; note where it waits for credit."""
    now = world.env.now
    if tr.dead:
        return
    sent = False
    while True:
        chunk = outflow.next_chunk(tr)
        if not chunk:
            break
        sent = True
        world.deliver(to_peer(now, chunk, busy), on_chunk, (conn, tr, chunk))
    if sent and tr.blocked_since is not None:
        tr.blocked_s += now - tr.blocked_since
        tr.blocked_since = None
    if tr.remaining > 0:
        if tr.blocked_since is None:
            tr.blocked_since = now
        if tr.stream_avail > 0 and tr not in outflow.blocked:
            outflow.blocked.append(tr)       # the connection window holds it back


def receive(tr: BodyTransfer, conn_inflow: Inflow, chunk: int) -> tuple[int, int]:
    """``chunk`` bytes reach the receiver: (stream, connection) credit to send back now."""
    tr.recv.take(chunk)
    conn_inflow.take(chunk)
    tr.in_flight -= chunk
    tr.buffered += chunk
    if not tr.consumes:
        return 0, 0
    return consume_buffered(tr, conn_inflow)


def consume_buffered(tr: BodyTransfer, conn_inflow: Inflow) -> tuple[int, int]:
    """The receiver reads what it holds of ``tr``: (stream, connection) credit to send back now."""
    n = tr.buffered
    tr.buffered = 0
    if not n:
        return 0, 0
    return tr.recv.add(n), conn_inflow.add(n)


def credit(world: Any, conn: "Conn", outflow: Outflow, tr: BodyTransfer, stream_n: int, conn_n: int,
           to_peer: Any, on_chunk: Any, busy: bool) -> None:
    """A WINDOW_UPDATE reaches the sender: resume ``tr``, then bodies blocked on the connection."""
    if conn_n:
        outflow.credit_connection(conn_n)
    if stream_n and not tr.dead:
        Outflow.credit_stream(tr, stream_n)
        pump(world, conn, outflow, tr, to_peer, on_chunk, busy)
    blocked = outflow.blocked
    while blocked and outflow.conn_avail > 0:
        other = blocked.popleft()
        if not other.dead and other.remaining > 0:
            pump(world, conn, outflow, other, to_peer, on_chunk, busy)
            if other in blocked:
                break                       # still held back by the connection window


class H2Pool:
    """The client process's HTTP/2 connections to the service, and the requests waiting for a slot."""

    def __init__(self, client: "ClientInstance") -> None:
        self.client = client
        t = client.config.transport
        self.strict = t.strict_max_concurrent_streams
        self.client_stream_window = t.h2_stream_window
        self.client_conn_window = t.h2_connection_window
        self.conns: list[Conn] = []
        self.waiters: deque[Attempt] = deque()
        self.redundant_dials = 0
        self.stream_resets_sent = 0

    # ------------------------------------------------------------ streams
    def with_room(self) -> "Conn | None":
        for conn in self.conns:
            if conn.h2.has_room():
                return conn
        return None

    def any_usable(self) -> bool:
        return any(c.h2.usable for c in self.conns)

    def wait_or_dial(self, att: "Attempt") -> None:
        """No connection has room: wait for a slot (strict, or at MaxConnsPerHost) or dial one."""
        c = self.client
        at_limit = bool(c.max_conns) and c.n_conns >= c.max_conns
        if (self.strict and self.any_usable()) or at_limit:
            self.waiters.append(att)
            if at_limit:
                c._slot_waiters.append(att)      # whichever comes first: a slot or a dial slot
            return
        c._start_dial(att)

    def conn_ready(self, conn: "Conn", att: "Attempt | None") -> None:
        """A dial (and its TLS handshake) finished: keep the connection, or close it unused when
        another already has room (Go's addConnIfNeeded); then serve the waiting requests."""
        c = self.client
        existing = self.with_room() if not self.strict else next((x for x in self.conns if x.h2.usable), None)
        conn.h2 = H2ClientConn(self.client_conn_window)
        if existing is not None:
            self.redundant_dials += 1
            if c.world.tracer is not None:
                c.world.tracer.append((c.env.now, "h2_redundant_conn", conn.id, existing.id))
            c._close(conn, notify_server=True)
            if att is not None and att.waiting:
                c._stop_waiting(att)
                c._get_conn(att)
            return
        self.conns.append(conn)
        conn.h2.idle_since = c.env.now
        # the client preface goes out; the server's SETTINGS come back a round trip later
        c.world.deliver(conn.to_server_s(c.env.now) + conn.link.one_way(), self._on_settings, conn)
        if att is not None and att.waiting:
            c._stop_waiting(att)
            self.open_stream(att, conn)
        self.serve_waiters()
        self._arm_idle(conn)

    def _on_settings(self, event: "Message") -> None:
        conn = event.value
        st = conn.h2
        if not conn.client_open or st is None:
            return
        server_cfg = self.client.service.config.server
        st.settings_known = True
        st.max_streams = server_cfg.h2_max_concurrent_streams
        delta = server_cfg.h2_stream_window - st.send_stream_window
        st.send_stream_window = server_cfg.h2_stream_window
        st.send.credit_connection(max(0, server_cfg.h2_connection_window - SPEC_INITIAL_WINDOW))
        c = self.client
        for att in list(st.streams):       # SETTINGS_INITIAL_WINDOW_SIZE adjusts open streams' windows
            tr = att.request_body
            if tr is not None and not tr.dead:
                tr.stream_avail += delta
                pump(c.world, conn, st.send, tr, conn.to_server_s, c.on_h2_body_chunk, len(st.streams) > 1)
        credit(c.world, conn, st.send, _NO_TRANSFER, 0, 0, conn.to_server_s, c.on_h2_body_chunk, False)
        self.serve_waiters()

    def serve_waiters(self) -> None:
        waiters = self.waiters
        c = self.client
        while waiters:
            att = waiters[0]
            if not att.waiting:
                waiters.popleft()
                continue
            conn = self.with_room()
            if conn is None:
                if not self.any_usable() and not (c.max_conns and c.n_conns >= c.max_conns):
                    waiters.popleft()      # nothing left to wait on: dial for it
                    c._start_dial(att)
                    continue
                return
            waiters.popleft()
            c._stop_waiting(att)
            self.open_stream(att, conn)

    def open_stream(self, att: "Attempt", conn: "Conn") -> None:
        """Send the request's HEADERS (and start its body) on a new stream of ``conn``."""
        c = self.client
        st = conn.h2
        st.streams[att] = None
        st.idle_since = -1.0
        c.open_stream(att, conn, len(st.streams) > 1)
        n_body = c.service.route_request_bytes[att.route]
        if n_body > 0:
            server_cfg = c.service.config.server
            tr = BodyTransfer(n_body, st.send_stream_window, server_cfg.h2_stream_window, att, c.env.now,
                              consumes=not c.service.route_body_unread[att.route])
            att.request_body = tr
            pump(c.world, conn, st.send, tr, conn.to_server_s, c.on_h2_body_chunk, len(st.streams) > 1)

    def stream_closed(self, att: "Attempt", conn: "Conn", reset: bool) -> None:
        """The client is done with a stream: answered, failed, or reset by either side. A stream
        the client resets keeps its slot until the PING ack, one round trip later."""
        st = conn.h2
        if att not in st.streams:
            return
        del st.streams[att]
        tr = att.request_body
        if tr is not None:
            tr.dead = True
        c = self.client
        if reset and conn.client_open:
            self.stream_resets_sent += 1
            st.pending_resets += 1
            c.world.deliver(conn.to_server_s(c.env.now), c.on_h2_rst_reaches_server, (conn, att))
            c.world.deliver(conn.to_server_s(c.env.now) + conn.link.one_way(), self._on_ping_ack, conn)
        if not st.streams and not st.pending_resets:
            st.idle_since = c.env.now
        self.serve_waiters()

    def _on_ping_ack(self, event: "Message") -> None:
        conn = event.value
        st = conn.h2
        st.pending_resets -= 1
        if not st.streams and not st.pending_resets:
            st.idle_since = self.client.env.now
        if conn.client_open:
            self.serve_waiters()

    # -------------------------------------------------------- connections
    def _arm_idle(self, conn: "Conn") -> None:
        c = self.client
        if c.idle_conn_timeout_s > 0 and conn.h2.idle_timer is None:
            conn.h2.idle_timer = c.timers.start(c.idle_conn_timeout_s, self._on_idle_timeout, conn)

    def _on_idle_timeout(self, conn: "Conn") -> None:
        """IdleConnTimeout: close a connection with no stream for the whole timeout (one lazily
        re-armed timer per connection)."""
        st = conn.h2
        st.idle_timer = None
        if not conn.client_open:
            return
        c = self.client
        if st.streams or st.pending_resets or st.idle_since < 0:
            st.idle_timer = c.timers.start(c.idle_conn_timeout_s, self._on_idle_timeout, conn)
            if not st.streams and not st.pending_resets:
                st.idle_since = c.env.now
            return
        remaining_s = st.idle_since + c.idle_conn_timeout_s - c.env.now
        if remaining_s > 1e-12:
            st.idle_timer = c.timers.start(remaining_s, self._on_idle_timeout, conn)
        else:
            c._close(conn, notify_server=True)

    def conn_closed(self, conn: "Conn") -> None:
        """The client closed ``conn`` or learnt it is gone: it takes no more streams."""
        st = conn.h2
        if st is None:
            return
        st.usable = False
        if st.idle_timer is not None:
            st.idle_timer.cancel()
            st.idle_timer = None
        try:
            self.conns.remove(conn)
        except ValueError:
            pass

    def streams_open(self) -> int:
        return sum(len(c.h2.streams) for c in self.conns)


class _NoTransfer(BodyTransfer):
    """Stands for 'no particular stream' when only connection credit arrives."""

    def __init__(self) -> None:
        super().__init__(0, 0, 1, None, 0.0, consumes=True)
        self.dead = True


_NO_TRANSFER = _NoTransfer()
