"""One client process's Go http.Transport towards one instance (host) of a service.

Go's Transport keeps its connections per host: this is that per-host half of
``sim.client`` (semantics.md §2, §3):

- getConn takes the most recently used idle connection (LIFO); with none it
  dials, and meanwhile waits FIFO for any connection that becomes idle, taking
  whichever comes first; a finished dial nobody wants goes to the idle pool
  (Go 1.23: dials are detached from the request that started them);
- ``MaxConnsPerHost`` counts dialling and open connections; requests beyond it
  wait FIFO for an idle connection or a dial slot, with no timer of their own;
- a connection becoming idle beyond ``MaxIdleConnsPerHost`` is closed;
  ``IdleConnTimeout`` closes idle connections;
- dial: a free ephemeral port (else ``addr_unavailable``), SYN, SYN retransmits
  at 1, 3, 7, 15, 31, 63 s when the accept queue drops it (or the network loses
  it) and ETIMEDOUT 127 s after the first, a reset when nothing listens,
  ``dial_timeout``; then TLS with ``TLSHandshakeTimeout``;
- an HTTP/1 request that times out closes its connection; HTTP/2 resets the
  stream (``sim.h2``);
- a request on a reused connection that the server closed (the keep-alive race)
  or reset is retried transparently when it is replayable (GET, HEAD, OPTIONS,
  TRACE), as ``shouldRetryRequest`` does.

The attempt's policies, retries and timers belong to its ``ClientInstance``
(``caller``); this class only moves it onto a connection and back.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import simpy

from sim.connection import Conn, Link, Message
from sim.edge_limits import PENDING
from sim.h2 import HEADERS_BYTES, MAX_UNPROCESSED_RETRIES, H2Pool, credit, receive
from sim.ports import EphemeralPorts

if TYPE_CHECKING:  # pragma: no cover
    from sim.client import Attempt, ClientInstance

SYN_RETRANSMIT_AFTER_S = (1.0, 3.0, 7.0, 15.0, 31.0, 63.0)   # cumulative, tcp_syn_retries = 6
SYN_GIVE_UP_AFTER_S = 127.0                                   # ip-sysctl.rst: final timeout


def syn_schedule(linear_timeouts: int) -> tuple[tuple[float, ...], float]:
    """(SYN retransmission instants after the first SYN, when connect() gives up): the initial RTO
    of 1 s, ``tcp_syn_linear_timeouts`` retransmissions 1 s apart (Linux >= 6.5 defaults to 4),
    then tcp_syn_retries = 6 with the RTO doubling. 0: 1, 3, 7, 15, 31, 63 s, ETIMEDOUT at 127 s;
    4: 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s, ETIMEDOUT at 131 s (ip-sysctl.rst)."""
    at = 0.0
    times = []
    for _ in range(linear_timeouts):
        at += 1.0
        times.append(at)
    rto = 1.0
    for _ in range(6):
        at += rto
        times.append(at)
        rto *= 2.0
    return tuple(times), at + rto
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_MAX_IDLE_CONNS_PER_HOST = 2     # http.DefaultMaxIdleConnsPerHost, used when the field is 0


class Dial:
    __slots__ = ("conn", "attempt", "timer", "syn_sent_at", "syn_tries", "started_at", "done")

    def __init__(self, conn: Conn, attempt: "Attempt | None", now: float) -> None:
        self.conn = conn
        self.attempt = attempt
        self.timer = None
        self.syn_sent_at = now
        self.syn_tries = 0
        self.started_at = now
        self.done = False


class HostTransport:
    """The connections of one client process to one instance of its service."""

    def __init__(self, caller: "ClientInstance", host: int, link: Link) -> None:
        world = caller.world
        self.caller = caller
        self.host = host
        self.world = world
        self.env: simpy.Environment = world.env
        self.timers = world.timers
        self.service = caller.service
        self.config = caller.config
        t = caller.config.transport
        self.link = link
        self.tls = t.tls if t.tls.enabled else None
        self.has_session = False
        self.dial_timeout_s = t.dial_timeout
        self.tls_timeout_s = t.tls.handshake_timeout
        self.max_conns = caller.max_conns
        self.max_idle_per_host = t.max_idle_conns_per_host or DEFAULT_MAX_IDLE_CONNS_PER_HOST
        self.max_idle_total = t.max_idle_conns
        self.idle_conn_timeout_s = t.idle_conn_timeout
        self.keep_alive = not t.disable_keep_alives
        self.drain_response_body = t.drain_response_body
        self.header_bytes = self.service.config.server.header_bytes
        self.ports = EphemeralPorts(t.ephemeral_ports)
        self._partitions = world.faults.partitions      # any partition fault in the run
        self.syn_retransmit_after_s, self.syn_give_up_after_s = syn_schedule(t.tcp_syn_linear_timeouts)
        self.h2 = H2Pool(self) if t.protocol == "http2" else None
        self.idle: list[Conn] = []
        self.conns: dict[Conn, None] = {}   # open or dialling (a dict: ordered, so runs repeat)
        self.n_conns = 0
        self.outstanding = 0          # attempts on this host (the load balancer's least-request count)
        self._wanters: deque[Attempt] = deque()       # waiting for any connection (FIFO, lazy removal)
        self._slot_waiters: deque[Attempt] = deque()  # waiting for a MaxConnsPerHost dial slot
        self._compact_wanters_at = 1024

    def reset_all(self) -> None:
        """The process died: every connection it had is reset (the server sees it go)."""
        for conn in list(self.conns):
            if conn.client_open:
                self._close(conn, notify_server=True)

    # ----------------------------------------------------------- getConn
    def _get_conn(self, att: Attempt) -> None:
        """getConn: an idle connection, else wait for one while dialling (or for a dial slot).
        HTTP/2: a stream on a connection with room, else wait or dial (``sim.h2``)."""
        h2 = self.h2
        if h2 is not None:
            conn = h2.with_room()
            if conn is not None:
                h2.open_stream(att, conn)
                return
        else:
            conn = self._take_idle()
            if conn is not None:
                self._send(att, conn)
                return
        limits = self.caller.edge_limits
        if limits is not None and limits.try_acquire(PENDING) is not None:
            self.caller._fail(att, "edge_overflow")
            return
        att.waiting = True
        self.caller.pending_attempts += 1
        if h2 is not None:
            h2.wait_or_dial(att)
            return
        if len(self._wanters) >= self._compact_wanters_at:
            self._compact_wait_queues()
        if self.keep_alive:
            # with DisableKeepAlives Go's queueForIdleConn returns false at once: the request
            # waits for its own dial only, and a dial nobody wants is closed
            self._wanters.append(att)
        if self.max_conns and self.n_conns >= self.max_conns:
            self._slot_waiters.append(att)
        else:
            self._start_dial(att)

    def _stop_waiting(self, att: Attempt) -> None:
        att.waiting = False
        self.caller.pending_attempts -= 1
        if self.caller.edge_limits is not None:
            self.caller.edge_limits.release(PENDING)

    def _compact_wait_queues(self) -> None:
        """Drop attempts that stopped waiting (timed out) from the FIFO wait queues: they are
        otherwise removed only when a connection is handed out, which a dead server never does."""
        self._wanters = deque(a for a in self._wanters if a.waiting)
        self._slot_waiters = deque(a for a in self._slot_waiters if a.waiting)
        if self.h2 is not None:
            self.h2.waiters = deque(a for a in self.h2.waiters if a.waiting)
        self._compact_wanters_at = max(1024, 2 * len(self._wanters))

    # ------------------------------------------------------------ connections
    def _take_idle(self) -> Conn | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.in_pool = False     # its idle timer stays armed; it checks idle_since when it fires
            if conn.client_open:
                return conn
        return None

    def _give(self, conn: Conn) -> bool:
        """Hand a ready connection to the oldest attempt still waiting for one."""
        wanters = self._wanters
        while wanters:
            att = wanters.popleft()
            if att.waiting:
                self._stop_waiting(att)
                self._send(att, conn)
                return True
        return False

    def _put_idle(self, conn: Conn) -> None:
        if not conn.client_open:
            return
        if not self.keep_alive:
            self._close(conn, notify_server=True)
            return
        if self._give(conn):
            return
        if len(self.idle) >= self.max_idle_per_host:
            self._close(conn, notify_server=True)      # errTooManyIdleHost
            return
        conn.in_pool = True
        conn.idle_since = self.env.now
        self.idle.append(conn)
        if self.idle_conn_timeout_s > 0 and conn.idle_timer is None:
            conn.idle_timer = self.timers.start(self.idle_conn_timeout_s, self._on_idle_conn_timeout, conn)
        if self.max_idle_total and len(self.idle) > self.max_idle_total:
            self._close(self.idle[0], notify_server=True)   # MaxIdleConns: the oldest idle goes

    def _on_idle_conn_timeout(self, conn: Conn) -> None:
        """IdleConnTimeout: close if idle for the whole timeout, else wait for the rest of it.

        Keeping one timer per connection and re-arming it lazily, instead of cancelling and
        restarting it on every request, keeps the timer heap the size of the pool."""
        conn.idle_timer = None
        if not conn.in_pool or not conn.client_open:
            return                     # in use: armed again when it next becomes idle
        remaining_s = conn.idle_since + self.idle_conn_timeout_s - self.env.now
        if remaining_s > 1e-12:
            conn.idle_timer = self.timers.start(remaining_s, self._on_idle_conn_timeout, conn)
        else:
            self._close(conn, notify_server=True)

    def _close(self, conn: Conn, notify_server: bool) -> None:
        if not conn.client_open:
            return
        conn.client_open = False
        tracer = self.world.tracer
        if tracer is not None:
            tracer.append((self.env.now, "client_close", conn.id, ""))
        if conn.in_pool:
            conn.in_pool = False
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None
        self.n_conns -= 1
        self.conns.pop(conn, None)
        self.world.client_conns -= 1
        if conn.holds_port:
            conn.holds_port = False
            # the side that closes first keeps the port in TIME_WAIT; a reset or the server's own
            # close (we answer its FIN) frees it at once
            self.ports.release(self.env.now, time_wait=notify_server and conn.established)
        if conn.h2 is not None:
            self.h2.conn_closed(conn)
        if notify_server and conn.established:
            self.world.deliver(conn.to_server_s(self.env.now), self._on_fin_reaches_server, conn)
        self._dial_slot_freed()

    def _on_fin_reaches_server(self, event: Message) -> None:
        conn = event.value
        conn.server.on_client_close(conn)

    def _dial_slot_freed(self) -> None:
        waiters = self._slot_waiters
        while waiters and (not self.max_conns or self.n_conns < self.max_conns):
            att = waiters.popleft()
            if att.waiting:
                self._start_dial(att)
                return
        if self.h2 is not None and self.h2.waiters:
            self.h2.serve_waiters()

    # ------------------------------------------------------------------- dial
    def _start_dial(self, att: Attempt | None) -> None:
        world = self.world
        if not self.ports.try_take(self.env.now):
            # connect: EADDRNOTAVAIL, at once: every port is open or in TIME_WAIT
            if world.tracer is not None:
                world.tracer.append((self.env.now, "addr_unavailable", None, self.ports.in_use(self.env.now)))
            if att is not None and att.waiting:
                self.caller._fail(att, "addr_unavailable")
            return
        self.n_conns += 1
        world.client_conns += 1
        if world.client_conns > world.peak_client_conns:
            world.peak_client_conns = world.client_conns
        conn = Conn(world.next_conn_id(), self, self.link, None)
        self.conns[conn] = None
        conn.holds_port = True
        conn.dial_started_at = self.env.now
        world.dials += 1
        dial = Dial(conn, att, self.env.now)
        if world.tracer is not None:
            world.tracer.append((self.env.now, "dial", conn.id, ""))
        if att is not None:
            att.new_conn = True
            att.dial = dial
        if self.dial_timeout_s > 0:
            dial.timer = self.timers.start(self.dial_timeout_s, self._on_dial_timeout, dial)
        self._send_syn(dial)

    def _send_syn(self, dial: Dial) -> None:
        dial.syn_sent_at = self.env.now
        if self.link.syn_lost() or (self._partitions and self.world.faults.partitioned(self.caller.edge_key, self.env.now)):
            if self.world.tracer is not None:
                self.world.tracer.append((self.env.now, "syn_lost", dial.conn.id, dial.syn_tries))
            self._syn_unanswered(dial)
            return
        self.world.deliver(dial.conn.to_server_s(self.env.now), self._on_syn_arrives, dial)

    def _syn_unanswered(self, dial: Dial) -> None:
        """No SYN-ACK will come: the SYN is sent again at 1, 3, 7, ... s after the first (RTO 1 s,
        doubling), and connect() gives up 127 s after the first (tcp_syn_retries = 6)."""
        if dial.syn_tries < len(self.syn_retransmit_after_s):
            wait_s = dial.started_at + self.syn_retransmit_after_s[dial.syn_tries] - self.env.now
            dial.syn_tries += 1
            self.world.syn_retransmits += 1
            ev = self.env.timeout(max(wait_s, 0.0), dial)
            ev.callbacks.append(self._on_syn_retransmit)
        else:
            ev = self.env.timeout(max(dial.started_at + self.syn_give_up_after_s - self.env.now, 0.0),
                                  (dial, "dial_timeout"))
            ev.callbacks.append(self._on_dial_error)

    def _on_syn_arrives(self, event: Message) -> None:
        dial: Dial = event.value
        if dial.done:
            return
        server = self.service.process(self.host)
        verdict = server.on_syn(dial.conn) if server is not None else "refuse"
        if verdict == "accept":
            dial.conn.server = server
            self.world.deliver(dial.conn.to_client_s(self.env.now), self._on_established, dial)
        elif verdict == "drop":
            if self.world.tracer is not None:
                self.world.tracer.append((self.env.now, "syn_dropped", dial.conn.id, dial.syn_tries))
            self._syn_unanswered(dial)
        else:
            self.world.deliver(dial.conn.to_client_s(self.env.now), self._on_dial_error, (dial, "conn_refused"))

    def _on_syn_retransmit(self, event: simpy.Event) -> None:
        dial: Dial = event.value
        if not dial.done:
            self._send_syn(dial)

    def _on_dial_timeout(self, dial: Dial) -> None:
        dial.timer = None
        self._dial_failed(dial, "dial_timeout")

    def _on_dial_error(self, event: Message) -> None:
        dial, kind = event.value
        self._dial_failed(dial, kind)

    def _dial_failed(self, dial: Dial, kind: str) -> None:
        if dial.done:
            return
        dial.done = True
        if dial.timer is not None:
            dial.timer.cancel()
            dial.timer = None
        conn = dial.conn
        if conn.client_open:
            self._close(conn, notify_server=conn.established)
        att = dial.attempt
        if att is not None and att.waiting:
            self.caller._fail(att, kind)

    def _on_established(self, event: Message) -> None:
        dial: Dial = event.value
        if dial.done:
            return
        conn = dial.conn
        conn.established = True
        conn.established_at = self.env.now
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "established", conn.id, ""))
        # the ACK (with the ClientHello under TLS) travels to the listener
        self.world.deliver(conn.to_server_s(self.env.now), self._on_ack_reaches_server, conn)
        if self.tls is not None:
            if dial.timer is not None:
                dial.timer.cancel()
                dial.timer = None
            if self.tls_timeout_s > 0:
                dial.timer = self.timers.start(self.tls_timeout_s, self._on_tls_timeout, dial)
            conn.attempt = dial      # the dial waiting for its handshake
            return
        self._dial_ready(dial)

    def _on_ack_reaches_server(self, event: Message) -> None:
        conn: Conn = event.value
        if conn.server is not None:
            conn.server.on_ack(conn, None)

    def _on_tls_timeout(self, dial: Dial) -> None:
        dial.timer = None
        self._dial_failed(dial, "tls_timeout")

    def on_tls_done(self, event: Message) -> None:
        conn: Conn = event.value
        dial = conn.attempt
        conn.attempt = None
        if not isinstance(dial, Dial) or dial.done or not conn.client_open:
            return
        conn.tls_done_at = self.env.now
        self.has_session = True
        self._dial_ready(dial)

    def _dial_ready(self, dial: Dial) -> None:
        dial.done = True
        if dial.timer is not None:
            dial.timer.cancel()
            dial.timer = None
        conn = dial.conn
        att = dial.attempt
        if self.h2 is not None:
            self.h2.conn_ready(conn, att)
            return
        if att is not None and att.waiting:
            self._stop_waiting(att)
            self._send(att, conn)
        elif not self._give(conn):
            self._put_idle(conn)

    # -------------------------------------------------------------- exchange
    def _send(self, att: Attempt, conn: Conn) -> None:
        att.conn = conn
        att.exchange = None
        conn.attempt = att
        if self.env.now > att.start_at:      # it waited: split the wait into its phases
            self._note_phases(att, conn)
        if att.header_timer is not None:       # a transparent retry: the timer is per round trip
            att.header_timer.cancel()
        if self.caller.header_timeout_s > 0:
            att.header_timer = self.timers.start(self.caller.header_timeout_s, self.caller._on_header_timeout, att)
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "request_sent", conn.id, att.request.id))
        if self.link.plain:
            delay_s = conn.to_server_s(self.env.now)
        else:
            delay_s = conn.to_server_s(self.env.now, self.header_bytes + self.service.route_request_bytes[att.route])
        if self._partitions and self.world.faults.partitioned(self.caller.edge_key, self.env.now):
            return                  # lost in the partition: the attempt's timers end it
        self.world.deliver(delay_s, self._on_request_reaches_server, (conn, att))

    def open_stream(self, att: Attempt, conn: Conn, busy: bool) -> None:
        """HTTP/2: the attempt's HEADERS go out on a new stream of ``conn`` (the body follows)."""
        att.conn = conn
        att.exchange = None
        self._note_phases(att, conn)
        if att.header_timer is not None:
            att.header_timer.cancel()
        if self.caller.header_timeout_s > 0:
            att.header_timer = self.timers.start(self.caller.header_timeout_s, self.caller._on_header_timeout, att)
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "stream_opened", conn.id, att.request.id))
        if self._partitions and self.world.faults.partitioned(self.caller.edge_key, self.env.now):
            return
        self.world.deliver(conn.to_server_s(self.env.now, HEADERS_BYTES, busy), self._on_request_reaches_server,
                           (conn, att))

    def on_h2_body_chunk(self, event: Message) -> None:
        conn, tr, chunk = event.value
        if conn.server is not None:
            conn.server.h2_body_chunk(conn, tr, chunk)

    def on_h2_window_update(self, event: Message) -> None:
        """The server's WINDOW_UPDATE reaches us: our request bodies on ``conn`` may go on."""
        conn, tr, stream_n, conn_n = event.value
        st = conn.h2
        if st is None or not conn.client_open:
            return
        credit(self.world, conn, st.send, tr, stream_n, conn_n, conn.to_server_s, self.on_h2_body_chunk,
               len(st.streams) > 1)

    def on_h2_rst_reaches_server(self, event: Message) -> None:
        conn, att = event.value
        if conn.server is not None:
            conn.server.h2_on_rst(conn, att)

    def on_h2_response_chunk(self, event: Message) -> None:
        """A chunk of a response body reaches us: credit goes back; the last one ends the attempt."""
        conn, tr, chunk = event.value
        st = conn.h2
        if st is None or not conn.client_open:
            return
        stream_n, conn_n = receive(tr, st.recv_conn, chunk)
        if (stream_n or conn_n) and conn.server is not None:
            self.world.deliver(conn.to_server_s(self.env.now), conn.server.h2_on_window_update,
                               (conn, tr, stream_n, conn_n))
        if tr.remaining == 0 and tr.in_flight == 0 and not tr.done:
            tr.done = True
            self._h2_response_complete(conn, tr.attempt, tr.status)

    def deliver_h2_response(self, conn: Conn, att: Attempt, status: int, delay_s: float) -> None:
        self.world.deliver(delay_s, self._on_h2_response, (conn, att, status))

    def _on_h2_response(self, event: Message) -> None:
        conn, att, status = event.value
        self._h2_response_complete(conn, att, status)

    def _h2_response_complete(self, conn: Conn, att: Attempt, status: int) -> None:
        if att.finished or att.conn is not conn:
            return
        self.caller._finish_attempt(att)
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "response_received", conn.id, status))
        att.status = status
        att.conn = None
        self.h2.stream_closed(att, conn, reset=False)
        self.caller._attempt_ended(att)

    def on_h2_stream_reset(self, event: Message) -> None:
        """The server reset the stream (RST_STREAM: its WriteTimeout): the attempt fails, the
        connection lives on."""
        conn, att = event.value
        if att.finished or att.conn is not conn:
            return
        self.caller._fail(att, "stream_reset")

    # ------------------------------------------------- time to the server
    def _note_phases(self, att: Attempt, conn: Conn) -> None:
        """The attempt has its connection (or stream) now: split the wait since its start into
        the connection's dial, TLS and accept-queue phases it overlapped, and pool wait."""
        now = self.env.now
        if att.to_server_s == att.to_server_s:
            return          # a transparent retry of a request the server had: keep the first pass
        start = att.start_at
        waited = now - start
        if waited <= 0.0:
            return
        dialled = att.dial.conn if att.dial is not None else conn   # its own dial, if it made one
        connect, tls, backlog = _overlaps(dialled, start, now)
        att.connect_s = connect
        att.tls_s = tls - backlog
        att.backlog_s = backlog
        att.pool_wait_s = waited - connect - tls

    def _note_wait_phases(self, att: Attempt) -> None:
        """The attempt ends while still waiting: its phases so far (its own dial's, if any)."""
        now = self.env.now
        if att.to_server_s == att.to_server_s:
            return          # it reached the server before (a transparent retry): keep those phases
        waited = now - att.start_at
        connect = tls = backlog = 0.0
        if att.dial is not None:
            connect, tls, backlog = _overlaps(att.dial.conn, att.start_at, now)
        att.connect_s = connect
        att.tls_s = tls - backlog
        att.backlog_s = backlog
        att.pool_wait_s = max(0.0, waited - connect - tls)

    def _on_request_reaches_server(self, event: Message) -> None:
        # bytes on the wire arrive even if the client has given up meanwhile (they precede its FIN)
        conn, att = event.value
        conn.server.on_request(conn, att)

    def deliver_response(self, conn: Conn, att: Attempt, status: int, delay_s: float, closing: bool) -> None:
        self.world.deliver(delay_s, self._on_response, (conn, att, status, closing))

    def _on_response(self, event: Message) -> None:
        conn, att, status, closing = event.value
        if att.finished or att.conn is not conn:
            return
        self.caller._finish_attempt(att)
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "response_received", conn.id, status))
        att.status = status
        att.conn = None
        conn.attempt = None
        conn.reused = True
        if closing:
            self._close(conn, notify_server=False)
        elif not self.drain_response_body:
            self._close(conn, notify_server=True)     # Body.Close before EOF: earlyCloseFn, alive=false
        else:
            self._put_idle(conn)
        self.caller._attempt_ended(att)

    def notify_server_close(self, conn: Conn, delay_s: float) -> None:
        self.world.deliver(delay_s, self._on_server_gone, conn)

    def notify_server_reset(self, conn: Conn, delay_s: float) -> None:
        self.world.deliver(delay_s, self._on_server_reset_event, conn)

    def on_server_reset(self, conn: Conn) -> None:
        """The server answered a segment with RST (closed or dead): learnt one trip later."""
        self.notify_server_reset(conn, conn.to_client_s(self.env.now))

    def _on_server_gone(self, event: Message) -> None:
        self._server_ended(event.value, "eof")

    def _on_server_reset_event(self, event: Message) -> None:
        self._server_ended(event.value, "conn_reset")

    def _server_ended(self, conn: Conn, kind: str) -> None:
        """The server closed or reset ``conn``; the client's readLoop finds out."""
        user = conn.attempt
        if conn.client_open:
            self._close(conn, notify_server=False)
        if isinstance(user, Dial):
            self._dial_failed(user, kind)
            return
        if conn.h2 is not None:
            self._h2_conn_ended(conn, kind)
            return
        att = user
        if att is None or att.finished or att.conn is not conn:
            return
        method = self.service.route_methods[att.route]
        if conn.reused and method in REPLAYABLE:
            if self.world.tracer is not None:
                self.world.tracer.append((self.env.now, "transparent_retry", conn.id, kind))
            # Go retries a replayable request on a reused connection the server closed or reset
            att.conn = None
            conn.attempt = None
            ev = self.env.timeout(0, att)
            ev.callbacks.append(self._on_transparent_retry)
            return
        self.caller._fail(att, kind)

    def _h2_conn_ended(self, conn: Conn, kind: str) -> None:
        """The server closed or reset an HTTP/2 connection: streams it never processed are retried
        at once on another connection (GOAWAY / REFUSED_STREAM, any method, up to 6 times); the
        others fail."""
        for att in list(conn.h2.streams):
            if att.finished or att.conn is not conn:
                continue
            if not att.reached_server and att.unprocessed_retries < MAX_UNPROCESSED_RETRIES:
                att.unprocessed_retries += 1
                conn.h2.streams.pop(att, None)
                if att.request_body is not None:
                    att.request_body.dead = True
                    att.request_body = None
                att.conn = None
                if self.world.tracer is not None:
                    self.world.tracer.append((self.env.now, "transparent_retry", conn.id, kind))
                ev = self.env.timeout(0, att)
                ev.callbacks.append(self._on_transparent_retry)
            else:
                self.caller._fail(att, kind)

    def _on_transparent_retry(self, event: simpy.Event) -> None:
        att: Attempt = event.value
        if not att.finished and not self.world.stopped:
            self._get_conn(att)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Length of [a0, a1] within [b0, b1]; a phase not yet over (NaN end) runs to a1."""
    if b0 != b0:
        return 0.0
    if b1 != b1:
        b1 = a1
    lo = a0 if a0 > b0 else b0
    hi = a1 if a1 < b1 else b1
    return hi - lo if hi > lo else 0.0


def _overlaps(conn: Conn, start: float, now: float) -> tuple[float, float, float]:
    """(connect, TLS, accept queue during TLS) of ``conn`` within [start, now]."""
    connect = _overlap(start, now, conn.dial_started_at, conn.established_at)
    if conn.client.tls is None:
        return connect, 0.0, 0.0
    tls = _overlap(start, now, conn.established_at, conn.tls_done_at)
    backlog = _overlap(start, now, conn.queued_at, conn.accepted_at)
    if backlog > tls:
        backlog = tls
    return connect, tls, backlog
