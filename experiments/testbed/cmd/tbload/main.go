// tbload: the testbed's load generator (Go http.Client / http.Transport) and database stub.
//
// It replays the open-loop arrivals the harness computed from the scenario (the same
// instants, routes and client instances as the simulator's, from the same seed): each
// arrival is a logical request sent by one client instance (its own http.Client and
// http.Transport: Client.Timeout, ResponseHeaderTimeout, MaxConnsPerHost,
// MaxIdleConnsPerHost, MaxIdleConns, IdleConnTimeout, DisableKeepAlives, a net.Dialer with
// the dial timeout), with the scenario's application retries (attempts, retry-on kinds and
// statuses, idempotent methods, per-try timeout, overall deadline, backoff and jitter,
// Retry-After). Every attempt's outcome is classified into stormsim's error kinds. It also
// opens the slow (slowloris) connections of slow_clients faults, and hosts the database
// stub the server's DB connections dial (it only holds them: queries are timed in the
// server).
//
// Bounded: it stops at t0 + duration, records what is still in flight as incomplete,
// writes its records and exits without waiting for anything. Loopback only.
//
// Protocol with the harness: prints "READY <db stub port>", reads "START <t0 unix ns>
// <server port>" on stdin, writes its records to -out when the run ends.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"stormsim/testbed/internal/tbconf"
)

var (
	t0ns     int64
	mu       sync.Mutex
	stopped  bool
	attempts []string // finished attempt records
	reqs     []*request
	rngMu    sync.Mutex
	rng      *rand.Rand
	cliConns int64
	inflight int64
)

func now() int64 { return time.Now().UnixNano() }

func uniform() float64 {
	rngMu.Lock()
	defer rngMu.Unlock()
	return rng.Float64()
}

type request struct {
	id       int
	client   int
	instance int
	route    int
	arrival  int64
	end      int64
	kind     string
	attempts int
	curStart int64 // the attempt in flight: its start (0 = none)
	curNew   bool
}

type client struct {
	cfg   tbconf.Client
	insts []*http.Client
}

// ------------------------------------------------------------------ connections

type countedConn struct {
	net.Conn
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { atomic.AddInt64(&cliConns, -1) })
	return c.Conn.Close()
}

func newTransport(t tbconf.Transport) *http.Transport {
	d := &net.Dialer{Timeout: tbconf.D(t.DialTimeoutS), KeepAlive: 30 * time.Second}
	return &http.Transport{
		// a client connection counts from the start of its dial to its close (as the model's)
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			atomic.AddInt64(&cliConns, 1)
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				atomic.AddInt64(&cliConns, -1)
				return nil, err
			}
			return &countedConn{Conn: c}, nil
		},
		MaxConnsPerHost:       t.MaxConnsPerHost,
		MaxIdleConnsPerHost:   t.MaxIdleConnsPerHost,
		MaxIdleConns:          t.MaxIdleConns,
		IdleConnTimeout:       tbconf.D(t.IdleConnTimeoutS),
		DisableKeepAlives:     t.DisableKeepAlives,
		ResponseHeaderTimeout: tbconf.D(t.ResponseHeaderTimeoutS),
		ForceAttemptHTTP2:     false,
	}
}

// ------------------------------------------------------------------ error kinds

// classify names a failed attempt with stormsim's error kinds (sim.schema.ERROR_KINDS).
func classify(err error, overall context.Context) string {
	s := err.Error()
	switch {
	case overall.Err() != nil:
		return "deadline_exceeded"
	case strings.Contains(s, "Client.Timeout"):
		return "client_timeout"
	case errors.Is(err, context.DeadlineExceeded):
		return "client_timeout" // the per-try timeout
	case strings.Contains(s, "timeout awaiting response headers"):
		return "response_header_timeout"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Timeout() {
		return "dial_timeout"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(s, "connection refused"):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		strings.Contains(s, "connection reset"), strings.Contains(s, "broken pipe"):
		return "conn_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), strings.Contains(s, "cannot assign requested address"):
		return "addr_unavailable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(s, "EOF"),
		strings.Contains(s, "server closed idle connection"):
		return "eof"
	case errors.Is(err, syscall.EMFILE), strings.Contains(s, "too many open files"):
		return "other:client_emfile"
	}
	return "other:" + strings.ReplaceAll(s, " ", "_")
}

func statusKind(code int) string {
	switch {
	case code >= 500:
		return "http_5xx"
	case code >= 400:
		return "http_4xx"
	}
	return "success"
}

// ------------------------------------------------------------------ one logical request

var idempotent = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true}

func delayS(r tbconf.Retry, n int, prev float64) float64 {
	if r.Backoff == "none" {
		return 0
	}
	if r.Jitter == "decorrelated" {
		if prev < 0 {
			prev = r.BackoffBaseS
		}
		return math.Min(r.BackoffCapS, r.BackoffBaseS+uniform()*(3*prev-r.BackoffBaseS))
	}
	expo := math.Min(r.BackoffCapS, r.BackoffBaseS)
	if r.Backoff == "exponential" {
		expo = math.Min(r.BackoffCapS, r.BackoffBaseS*math.Pow(r.BackoffMultiplier, float64(n-1)))
	}
	switch r.Jitter {
	case "none":
		return expo
	case "full":
		return expo * uniform()
	case "equal":
		return expo/2 + uniform()*expo/2
	}
	return expo * (0.8 + 0.4*uniform()) // grpc
}

func retryable(r tbconf.Retry, kind string, status int, method string) bool {
	ok := false
	for _, k := range r.RetryOn {
		if k == kind {
			ok = true
		}
	}
	if !ok {
		return false
	}
	if len(r.RetryOnStatus) > 0 && (kind == "http_4xx" || kind == "http_5xx") {
		found := false
		for _, s := range r.RetryOnStatus {
			if s == status {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return r.RetryNonIdempotent || idempotent[method]
}

func run(cfg *tbconf.Config, c *client, rq *request, base string) {
	atomic.AddInt64(&inflight, 1)
	defer atomic.AddInt64(&inflight, -1)
	rc := cfg.Routes[rq.route]
	hc := c.insts[rq.instance]
	rt := c.cfg.Retry
	overall := context.Background()
	if rt.DeadlineS > 0 {
		var cancel context.CancelFunc
		overall, cancel = context.WithDeadline(overall, time.Unix(0, rq.arrival).Add(tbconf.D(rt.DeadlineS)))
		defer cancel()
	}
	prev := -1.0
	for n := 0; ; n++ {
		kind, status, retryAfter := attempt(c, hc, rc, rq, n, base, overall)
		if kind == "success" || n+1 >= rt.MaxAttempts || kind == "deadline_exceeded" ||
			!retryable(rt, kind, status, rc.Method) {
			finish(rq, kind)
			return
		}
		d := delayS(rt, n+1, prev)
		prev = d
		if rt.HonourRetryAfter && retryAfter > d {
			d = retryAfter
		}
		if d > 0 {
			t := time.NewTimer(tbconf.D(d))
			select {
			case <-t.C:
			case <-overall.Done():
				t.Stop()
				finish(rq, "deadline_exceeded")
				return
			}
		}
	}
}

func finish(rq *request, kind string) {
	mu.Lock()
	defer mu.Unlock()
	if stopped {
		return
	}
	rq.end = now()
	rq.kind = kind
}

func attempt(c *client, hc *http.Client, rc tbconf.Route, rq *request, n int, base string,
	overall context.Context) (string, int, float64) {
	start := now()
	mu.Lock()
	if stopped {
		mu.Unlock()
		select {} // the run is over: this goroutine waits for the process to exit
	}
	rq.attempts = n + 1
	rq.curStart = start
	rq.curNew = false
	mu.Unlock()
	ctx := overall
	if c.cfg.Retry.PerTryTimeoutS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tbconf.D(c.cfg.Retry.PerTryTimeoutS))
		defer cancel()
	}
	var getAt, gotAt, connStart, connDone int64
	newConn := false
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { getAt = now() },
		ConnectStart: func(string, string) { connStart = now() },
		ConnectDone:  func(string, string, error) { connDone = now() },
		GotConn: func(i httptrace.GotConnInfo) {
			gotAt = now()
			newConn = !i.Reused
		},
	}
	ctx = httptrace.WithClientTrace(ctx, trace)
	var body io.Reader
	if rc.RequestBody || rc.RequestBytes > 0 {
		nb := rc.RequestBytes
		if nb == 0 {
			nb = 16
		}
		body = bytes.NewReader(make([]byte, nb))
	}
	req, _ := http.NewRequestWithContext(ctx, rc.Method, base+rc.Name, body)
	req.Header.Set("X-Tb-Id", fmt.Sprintf("%d.%d", rq.id, n))
	resp, err := hc.Do(req)
	kind, status, retryAfter := "success", 0, 0.0
	if err != nil {
		kind = classify(err, overall)
	} else {
		status = resp.StatusCode
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			retryAfter, _ = strconv.ParseFloat(ra, 64)
		}
		if c.cfg.Transport.DrainResponseBody {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		if err != nil {
			kind = classify(err, overall)
		} else {
			kind = statusKind(status)
		}
	}
	end := now()
	connect, poolWait := int64(0), int64(0)
	if connStart > 0 && connDone >= connStart {
		connect = connDone - connStart
	}
	if getAt > 0 && gotAt >= getAt {
		poolWait = gotAt - getAt - connect
		if poolWait < 0 {
			poolWait = 0
		}
	}
	mu.Lock()
	if !stopped {
		rq.curStart = 0
		attempts = append(attempts, fmt.Sprintf("A %d %d %d %d %s %d %t %d %d", rq.id, n, start, end, kind, status,
			newConn, connect, poolWait))
	}
	mu.Unlock()
	return kind, status, retryAfter
}

// ------------------------------------------------------------------ slow clients, DB stub

func slowClient(addr string, sc tbconf.SlowClients, idx, group int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	if sc.BytesPerS > 0 {
		hdr := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\n", sc.Path)
		if sc.BodyBytes > 0 {
			hdr += fmt.Sprintf("Content-Length: %d\r\n", sc.BodyBytes)
		}
		pad := sc.HeaderBytes - len(hdr) - len("X-Pad: \r\n\r\n")
		if pad > 0 {
			hdr += "X-Pad: " + strings.Repeat("a", pad) + "\r\n"
		}
		msg := []byte(hdr + "\r\n" + strings.Repeat("b", sc.BodyBytes))
		gap := time.Duration(float64(time.Second) / sc.BytesPerS)
		for i := 0; i < len(msg); i++ {
			if _, err := c.Write(msg[i : i+1]); err != nil {
				return
			}
			time.Sleep(gap)
		}
	}
	// the response (or the server's close); once it has the response the attacker closes (the
	// model's slow client does), rather than leave a kept-alive connection behind
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func dbStub(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// ------------------------------------------------------------------ main

func main() {
	cfgPath := flag.String("config", "", "testbed config (JSON)")
	arrPath := flag.String("arrivals", "", "arrivals: one line per request: client instance route at_s")
	outPath := flag.String("out", "", "records file to write")
	flag.Parse()
	cfg, err := tbconf.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload:", err)
		os.Exit(2)
	}
	rng = rand.New(rand.NewSource(cfg.Seed))
	af, err := os.Open(*arrPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload:", err)
		os.Exit(2)
	}
	type arrival struct {
		client, inst, route int
		at                  float64
	}
	var arrivals []arrival
	sc := bufio.NewScanner(af)
	for sc.Scan() {
		var a arrival
		if _, err := fmt.Sscan(sc.Text(), &a.client, &a.inst, &a.route, &a.at); err == nil {
			arrivals = append(arrivals, a)
		}
	}
	af.Close()
	out, err := os.Create(*outPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbload:", err)
		os.Exit(2)
	}
	go dbStub(ln)
	clients := make([]*client, len(cfg.Clients))
	for i, cc := range cfg.Clients {
		c := &client{cfg: cc}
		for j := 0; j < cc.Instances; j++ {
			c.insts = append(c.insts, &http.Client{Transport: newTransport(cc.Transport),
				Timeout: tbconf.D(cc.Transport.ClientTimeoutS)})
		}
		clients[i] = c
	}
	fmt.Printf("READY %d\n", ln.Addr().(*net.TCPAddr).Port)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		os.Exit(1)
	}
	parts := strings.Fields(in.Text())
	if len(parts) != 3 || parts[0] != "START" {
		fmt.Fprintln(os.Stderr, "tbload: expected START <t0> <port>")
		os.Exit(2)
	}
	t0ns, _ = strconv.ParseInt(parts[1], 10, 64)
	addr := "127.0.0.1:" + parts[2]
	base := "http://" + addr + "/r/"
	endNs := t0ns + int64(tbconf.D(cfg.DurationS))
	levels := []string{}
	go func() { // client-side levels on the t0 grid
		step := int64(tbconf.D(cfg.SampleIntervalS))
		for k := int64(1); ; k++ {
			at := t0ns + k*step
			if at > endNs {
				return
			}
			time.Sleep(time.Duration(at - now()))
			mu.Lock()
			if !stopped {
				levels = append(levels, fmt.Sprintf("C %d %d %d", now(), atomic.LoadInt64(&cliConns),
					atomic.LoadInt64(&inflight)))
			}
			mu.Unlock()
		}
	}()
	for g, s := range cfg.SlowClients {
		for i, at := range s.ConnectAtS {
			s, i, g := s, i, g
			time.AfterFunc(time.Duration(t0ns+int64(tbconf.D(at))-now()), func() { slowClient(addr, s, i, g) })
		}
	}
	go func() {
		for i, a := range arrivals {
			at := t0ns + int64(tbconf.D(a.at))
			if at >= endNs {
				break
			}
			if d := at - now(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			rq := &request{id: i, client: a.client, instance: a.inst, route: a.route, arrival: at}
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			reqs = append(reqs, rq)
			mu.Unlock()
			go run(cfg, clients[a.client], rq, base)
		}
	}()
	time.Sleep(time.Duration(endNs - now()))
	mu.Lock()
	stopped = true
	w := bufio.NewWriterSize(out, 1<<20)
	fmt.Fprintf(w, "T %d %d\n", t0ns, endNs)
	for _, l := range levels {
		fmt.Fprintln(w, l)
	}
	for _, a := range attempts {
		fmt.Fprintln(w, a)
	}
	for _, rq := range reqs {
		if rq.kind == "" {
			rq.kind = "incomplete"
			if rq.curStart > 0 {
				fmt.Fprintf(w, "A %d %d %d %d %s %d %t %d %d\n", rq.id, rq.attempts-1, rq.curStart, 0, "incomplete", 0,
					rq.curNew, 0, 0)
			}
		}
		fmt.Fprintf(w, "R %d %d %d %d %d %d %s %d\n", rq.id, rq.client, rq.instance, rq.route, rq.arrival, rq.end,
			rq.kind, rq.attempts)
	}
	w.Flush()
	out.Close()
	mu.Unlock()
	os.Exit(0)
}
