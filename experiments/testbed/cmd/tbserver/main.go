// tbserver: the testbed's Go net/http server, configured from a stormsim scenario.
//
// It serves every route of the scenario at /r/<route> with the scenario's handler work:
// CPU spins (a loop calibrated at start, so the work is CPU time, not wall time), sleeps,
// heap allocations held until the handler returns, and queries through a real
// database/sql pool (SetMaxOpenConns, SetMaxIdleConns, SetConnMaxLifetime) over a small
// in-process driver: a DB connection is a real loopback TCP connection to a stub in the load
// generator (so it holds an fd here), a dial costs one DB round trip, and a query waits one
// round trip plus the table's query time plus the lock wait while a db_lock lasts, with a
// timer that ends early only when the query's context ends (the connection is then closed).
// The http.Server has the scenario's four timeouts, http.TimeoutHandler when asked, a
// listen backlog of accept_backlog and RLIMIT_NOFILE = fd_limit (soft and hard, set before
// listening: Go 1.19 raised the soft limit to the hard one at start-up). A memory limit is
// a container's OOM killer: a watchdog reads the resident set size every 10 ms and SIGKILLs
// the process when it reaches the limit. A ballast of (baseline - resident size at start)
// stands for the process's own data at rest, so the heap goal starts where the model's does.
//
// Protocol with the harness (experiments/testbed/run.py): prints "READY <port>" on stdout,
// then waits for "START <t0 unix ns>" on stdin. Every sample_interval on the t0 grid it
// appends a stats line to the events file; it also logs handler start and end per attempt
// id (header X-Tb-Id), lock waits, accept errors (EMFILE) and the OOM kill. Loopback only.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"stormsim/testbed/internal/tbconf"
)

var (
	t0ns    int64 // start of the run, unix ns (set once START arrives)
	evMu    sync.Mutex
	evW     *bufio.Writer
	conns   int64 // accepted and not closed (ConnState)
	peakCon int64
	infl    int64 // handlers running (inner handlers under TimeoutHandler)
	accErrs int64
	// how the machine treats the handler work: CPU steps and DB timers, nominal vs wall
	cpuNom, cpuWall, dbNom, dbWall, dbN int64
	spinPerNs                           float64
	sink                                uint64
)

func now() int64 { return time.Now().UnixNano() }

func event(format string, a ...any) {
	evMu.Lock()
	fmt.Fprintf(evW, format, a...)
	evW.WriteByte('\n')
	evMu.Unlock()
}

func flushEvents() {
	evMu.Lock()
	evW.Flush()
	evMu.Unlock()
}

// ------------------------------------------------------------------ CPU work

func spinLoop(n uint64) uint64 {
	x := uint64(88172645463325252)
	for i := uint64(0); i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// calibrateSpin measures loop iterations per ns, taking the fastest of several tries (the
// least disturbed by other work on the machine).
func calibrateSpin() {
	best := 0.0
	for i := 0; i < 15; i++ {
		const n = 2_000_000
		t := time.Now()
		sink += spinLoop(n)
		r := float64(n) / float64(time.Since(t).Nanoseconds())
		if r > best {
			best = r
		}
	}
	spinPerNs = best
}

func spin(d time.Duration) {
	if d <= 0 {
		return
	}
	atomic.AddUint64(&sink, spinLoop(uint64(float64(d.Nanoseconds())*spinPerNs)))
}

// ------------------------------------------------------------------ the database

type dbSim struct {
	name  string
	rtt   time.Duration
	cfg   tbconf.Database
	locks []tbconf.Lock
	stub  string
}

type connector struct{ db *dbSim }

type dbDriver struct{}

func (dbDriver) Open(string) (driver.Conn, error) { return nil, errors.New("use the connector") }

func (c *connector) Driver() driver.Driver { return dbDriver{} }

// Connect dials the database: one round trip, and a TCP connection that holds an fd. Like a
// dial that is not abandoned when its requester goes, it ignores ctx (database/sql then
// hands the connection on or keeps it idle).
func (c *connector) Connect(context.Context) (driver.Conn, error) {
	time.Sleep(c.db.rtt)
	nc, err := net.Dial("tcp", c.db.stub)
	if err != nil {
		return nil, err // EMFILE when the fd table is full: the query fails (500)
	}
	return &dbConn{db: c.db, nc: nc}, nil
}

type dbConn struct {
	db  *dbSim
	nc  net.Conn
	bad bool
}

func (c *dbConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("no prepared statements")
}
func (c *dbConn) Close() error              { return c.nc.Close() }
func (c *dbConn) Begin() (driver.Tx, error) { return nil, errors.New("no transactions") }
func (c *dbConn) IsValid() bool             { return !c.bad }
func (c *dbConn) ResetSession(context.Context) error {
	if c.bad {
		return driver.ErrBadConn
	}
	return nil
}

// querying passes the attempt id and the route's "holding a DB connection" counter to the driver.
type querying struct {
	id      string
	counter *int64
}

// Value makes it a query argument (database/sql converts arguments before the driver sees them).
func (q querying) Value() (driver.Value, error) { return q.id, nil }

// CheckNamedValue keeps the argument as it is.
func (c *dbConn) CheckNamedValue(*driver.NamedValue) error { return nil }

// ExecContext runs "query" on the table named by the query text; args[0] is the querying value.
func (c *dbConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	table := query
	tcfg := c.db.cfg.Tables[table]
	d := c.db.rtt
	if tcfg.Dist == "constant" {
		d += tbconf.D(tcfg.QueryTimeS)
	} else {
		d += tbconf.D(tcfg.QueryTimeS * rand.ExpFloat64())
	}
	var q querying
	if len(args) > 0 {
		q, _ = args[0].Value.(querying)
	}
	if q.counter != nil {
		atomic.AddInt64(q.counter, 1)
		defer atomic.AddInt64(q.counter, -1)
	}
	at := float64(now()-t0ns) / 1e9
	lock := 0.0
	for _, l := range c.db.locks {
		if l.DB == c.db.name && l.Table == table && l.StartS <= at && at < l.EndS && l.LockWaitS > lock {
			lock = l.LockWaitS
		}
	}
	if lock > 0 {
		event("L %s %d", q.id, now())
		d += tbconf.D(lock)
	}
	began := time.Now()
	t := time.NewTimer(d)
	select {
	case <-t.C:
		atomic.AddInt64(&dbNom, int64(d))
		atomic.AddInt64(&dbWall, int64(time.Since(began)))
		atomic.AddInt64(&dbN, 1)
		return driver.RowsAffected(0), nil
	case <-ctx.Done():
		t.Stop()
		c.bad = true // the driver abandons the connection: database/sql closes it
		return nil, ctx.Err()
	}
}

// ------------------------------------------------------------------ handlers

type route struct {
	cfg      tbconf.Route
	pools    map[string]*sql.DB
	resp     []byte
	inflight int64 // handlers of this route running
	querying int64 // of which in a query, holding a DB connection
}

var routes []*route

func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	atomic.AddInt64(&infl, 1)
	atomic.AddInt64(&rt.inflight, 1)
	defer atomic.AddInt64(&infl, -1)
	defer atomic.AddInt64(&rt.inflight, -1)
	id := r.Header.Get("X-Tb-Id")
	if !rt.cfg.RequestBody {
		io.Copy(io.Discard, r.Body) // read the body first: then Go starts the background read
	}
	event("H %s %d", id, now())
	status := rt.work(r.Context(), id)
	event("E %s %d %d", id, now(), status)
	w.WriteHeader(status)
	w.Write(rt.resp)
}

func (rt *route) work(ctx context.Context, id string) int {
	var held [][]byte
	defer runtime.KeepAlive(&held)
	for _, st := range rt.cfg.Steps {
		if st.P < 1 && rand.Float64() >= st.P {
			continue
		}
		switch st.Op {
		case "cpu", "sleep":
			d := st.S
			if st.Dist == "exponential" {
				d *= rand.ExpFloat64()
			}
			if st.Op == "cpu" {
				began := time.Now()
				spin(tbconf.D(d))
				atomic.AddInt64(&cpuNom, int64(tbconf.D(d)))
				atomic.AddInt64(&cpuWall, int64(time.Since(began)))
			} else {
				time.Sleep(tbconf.D(d)) // never cut short: Go cannot pre-empt a goroutine
			}
		case "alloc":
			b := make([]byte, st.Bytes)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1 // resident, not just reserved
			}
			held = append(held, b)
		case "query":
			qctx := context.Background()
			if rt.cfg.HonoursContext {
				qctx = ctx
			}
			var cancel context.CancelFunc = func() {}
			if rt.cfg.DBDeadlineS > 0 {
				qctx, cancel = context.WithTimeout(qctx, tbconf.D(rt.cfg.DBDeadlineS))
			}
			_, err := rt.pools[st.DB].ExecContext(qctx, st.Table, querying{id, &rt.querying})
			cancel()
			if err != nil {
				return http.StatusInternalServerError
			}
		}
	}
	return http.StatusOK
}

// ------------------------------------------------------------------ listener, logs

// listen opens 127.0.0.1:0 with the given backlog (net.Listen always uses somaxconn).
func listen(backlog int) (net.Listener, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f) // dups the fd
	f.Close()
	return ln, err
}

type errorLog struct{}

func (errorLog) Write(b []byte) (int, error) {
	s := strings.TrimSpace(string(b))
	if strings.Contains(s, "Accept error") {
		atomic.AddInt64(&accErrs, 1)
	}
	event("X %d %s", now(), strconv.Quote(s))
	return len(b), nil
}

func rssBytes(statm *os.File) int64 {
	var buf [128]byte
	n, err := statm.ReadAt(buf[:], 0)
	if n <= 0 && err != nil {
		return 0
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// monitor writes a stats line on the t0 grid and, every 10 ms, plays the OOM killer. On
// SIGTERM (the harness ending the run) it flushes the events and exits. One goroutine.
func monitor(cfg *tbconf.Config, statm *os.File, pools map[string]*sql.DB, sigs chan os.Signal) {
	step := tbconf.D(cfg.SampleIntervalS)
	next := t0ns
	tick := time.NewTicker(10 * time.Millisecond)
	var ms runtime.MemStats
	for {
		select {
		case <-sigs:
			flushEvents()
			os.Exit(0)
		case <-tick.C:
		}
		t := now()
		if lim := cfg.Server.MemoryLimitB; lim > 0 {
			if rss := rssBytes(statm); rss >= lim {
				event("K %d %d", t, rss)
				flushEvents()
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		if t < next {
			continue
		}
		for next <= t {
			next += int64(step)
		}
		runtime.ReadMemStats(&ms)
		open, inUse := 0, 0
		for _, db := range pools {
			s := db.Stats()
			open += s.OpenConnections
			inUse += s.InUse
		}
		// S t goroutines conns peak_conns inflight heap_alloc heap+stack rss db_open db_in_use accept_errors gcs
		//   cpu_nominal_ns cpu_wall_ns db_timer_nominal_ns db_timer_wall_ns db_timers
		event("S %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", t, runtime.NumGoroutine(), atomic.LoadInt64(&conns),
			atomic.SwapInt64(&peakCon, atomic.LoadInt64(&conns)), atomic.LoadInt64(&infl), ms.HeapAlloc,
			ms.HeapInuse+ms.StackInuse, rssBytes(statm), open, inUse, atomic.LoadInt64(&accErrs), ms.NumGC,
			atomic.LoadInt64(&cpuNom), atomic.LoadInt64(&cpuWall), atomic.LoadInt64(&dbNom), atomic.LoadInt64(&dbWall),
			atomic.LoadInt64(&dbN))
		// P t inflight_by_route... querying_by_route... (routes in config order)
		evMu.Lock()
		fmt.Fprintf(evW, "P %d", t)
		for _, rt := range routes {
			fmt.Fprintf(evW, " %d", atomic.LoadInt64(&rt.inflight))
		}
		for _, rt := range routes {
			fmt.Fprintf(evW, " %d", atomic.LoadInt64(&rt.querying))
		}
		evW.WriteByte('\n')
		evMu.Unlock()
		flushEvents()
	}
}

func main() {
	cfgPath := flag.String("config", "", "testbed config (JSON)")
	evPath := flag.String("events", "", "events file to write")
	dbStub := flag.String("db", "", "address of the database stub")
	flag.Parse()
	cfg, err := tbconf.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbserver:", err)
		os.Exit(2)
	}
	sv := cfg.Server
	rand.Seed(cfg.Seed + 7)
	if sv.Cores > 0 {
		runtime.GOMAXPROCS(sv.Cores)
	}
	if sv.GOGC > 0 {
		debug.SetGCPercent(sv.GOGC)
	}
	if sv.GoMemLimitB > 0 {
		debug.SetMemoryLimit(sv.GoMemLimitB)
	}
	f, err := os.Create(*evPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbserver:", err)
		os.Exit(2)
	}
	evW = bufio.NewWriterSize(f, 1<<20)
	statm, err := os.Open("/proc/self/statm")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbserver:", err)
		os.Exit(2)
	}
	calibrateSpin()
	var ballast []byte
	if extra := sv.BaselineB - rssBytes(statm); extra > 0 {
		ballast = make([]byte, extra)
		for i := 0; i < len(ballast); i += 4096 {
			ballast[i] = 1
		}
	}
	runtime.GC()

	pools := map[string]*sql.DB{}
	for name, dcfg := range cfg.Databases {
		sim := &dbSim{name: name, rtt: tbconf.D(dcfg.RttS), cfg: dcfg, locks: cfg.Locks, stub: *dbStub}
		db := sql.OpenDB(&connector{db: sim})
		p, ok := cfg.Pools[name]
		if !ok {
			p = tbconf.Pool{MaxIdleConns: 2}
		}
		db.SetMaxOpenConns(p.MaxOpenConns)
		db.SetMaxIdleConns(p.MaxIdleConns)
		db.SetConnMaxLifetime(tbconf.D(p.ConnMaxLifetimeS))
		pools[name] = db
	}
	mux := http.NewServeMux()
	for _, rc := range cfg.Routes {
		resp := []byte("ok\n")
		if rc.ResponseBytes > 0 {
			resp = make([]byte, rc.ResponseBytes)
		}
		rt := &route{cfg: rc, pools: pools, resp: resp}
		routes = append(routes, rt)
		mux.Handle("/r/"+rc.Name, rt)
	}
	var handler http.Handler = mux
	if sv.TimeoutHandlerS > 0 {
		handler = http.TimeoutHandler(mux, tbconf.D(sv.TimeoutHandlerS), "timeout")
	}
	srv := &http.Server{
		Handler:           handler,
		ReadTimeout:       tbconf.D(sv.ReadTimeoutS),
		ReadHeaderTimeout: tbconf.D(sv.ReadHeaderTimeoutS),
		WriteTimeout:      tbconf.D(sv.WriteTimeoutS),
		IdleTimeout:       tbconf.D(sv.IdleTimeoutS),
		ErrorLog:          log.New(errorLog{}, "", 0),
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				n := atomic.AddInt64(&conns, 1)
				for {
					p := atomic.LoadInt64(&peakCon)
					if n <= p || atomic.CompareAndSwapInt64(&peakCon, p, n) {
						break
					}
				}
			case http.StateClosed, http.StateHijacked:
				atomic.AddInt64(&conns, -1)
			}
		},
	}
	fdLimit := sv.FdLimit
	if fdLimit > 0 {
		lim := syscall.Rlimit{Cur: fdLimit, Max: fdLimit}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			// above the hard limit we were given (no CAP_SYS_RESOURCE): run with that one
			var have syscall.Rlimit
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &have)
			if have.Max >= fdLimit {
				fmt.Fprintln(os.Stderr, "tbserver: setrlimit:", err)
				os.Exit(2)
			}
			fdLimit = have.Max
			lim = syscall.Rlimit{Cur: fdLimit, Max: fdLimit}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	ln, err := listen(sv.AcceptBacklog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tbserver: listen:", err)
		os.Exit(2)
	}
	// SIGTERM from the harness: flush the events and go
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("READY %d %d\n", ln.Addr().(*net.TCPAddr).Port, len(ballast))
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		os.Exit(1)
	}
	parts := strings.Fields(in.Text())
	if len(parts) != 2 || parts[0] != "START" {
		fmt.Fprintln(os.Stderr, "tbserver: expected START <t0>")
		os.Exit(2)
	}
	t0ns, _ = strconv.ParseInt(parts[1], 10, 64)
	event("T %d %f %d", t0ns, spinPerNs, fdLimit)
	go monitor(cfg, statm, pools, sigs)
	srv.Serve(ln)
	runtime.KeepAlive(ballast)
}
