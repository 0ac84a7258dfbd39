// Package tbconf is the testbed's configuration: the subset of a stormsim scenario that a
// real Go server and load generator can express, as written by experiments/testbed/config.py.
// Durations are seconds (float64), sizes bytes. Both programs read the same JSON file.
package tbconf

import (
	"encoding/json"
	"os"
	"time"
)

type Step struct {
	Op    string  `json:"op"` // cpu, sleep, alloc, query
	S     float64 `json:"s"`  // cpu, sleep: seconds (the mean when Dist is exponential)
	Dist  string  `json:"dist"`
	Bytes int64   `json:"bytes"` // alloc
	DB    string  `json:"db"`    // query
	Table string  `json:"table"` // query
	P     float64 `json:"p"`     // probability that the step runs (1 = always)
}

type Route struct {
	Name           string  `json:"name"`
	Method         string  `json:"method"`
	Steps          []Step  `json:"steps"`
	HonoursContext bool    `json:"honours_context"`
	DBDeadlineS    float64 `json:"db_deadline_s"`
	RequestBody    bool    `json:"request_body"` // a body the handler does not read
	RequestBytes   int64   `json:"request_bytes"`
	ResponseBytes  int64   `json:"response_bytes"`
}

type Server struct {
	ReadTimeoutS       float64 `json:"read_timeout_s"`
	ReadHeaderTimeoutS float64 `json:"read_header_timeout_s"`
	WriteTimeoutS      float64 `json:"write_timeout_s"`
	IdleTimeoutS       float64 `json:"idle_timeout_s"`
	TimeoutHandlerS    float64 `json:"timeout_handler_s"`
	AcceptBacklog      int     `json:"accept_backlog"`
	FdLimit            uint64  `json:"fd_limit"`
	Cores              int     `json:"cores"`
	MemoryLimitB       int64   `json:"memory_limit_b"`
	BaselineB          int64   `json:"baseline_b"`
	GOGC               int     `json:"gogc"`
	GoMemLimitB        int64   `json:"gomemlimit_b"`
}

type Pool struct {
	MaxOpenConns     int     `json:"max_open_conns"`
	MaxIdleConns     int     `json:"max_idle_conns"`
	ConnMaxLifetimeS float64 `json:"conn_max_lifetime_s"`
}

type Table struct {
	QueryTimeS float64 `json:"query_time_s"`
	Dist       string  `json:"dist"`
}

type Database struct {
	RttS   float64          `json:"rtt_s"`
	Tables map[string]Table `json:"tables"`
}

type Lock struct {
	DB        string  `json:"db"`
	Table     string  `json:"table"`
	StartS    float64 `json:"start_s"`
	EndS      float64 `json:"end_s"`
	LockWaitS float64 `json:"lock_wait_s"`
}

type Transport struct {
	DialTimeoutS           float64 `json:"dial_timeout_s"`
	ClientTimeoutS         float64 `json:"client_timeout_s"`
	ResponseHeaderTimeoutS float64 `json:"response_header_timeout_s"`
	MaxConnsPerHost        int     `json:"max_conns_per_host"`
	MaxIdleConnsPerHost    int     `json:"max_idle_conns_per_host"`
	MaxIdleConns           int     `json:"max_idle_conns"`
	IdleConnTimeoutS       float64 `json:"idle_conn_timeout_s"`
	DisableKeepAlives      bool    `json:"disable_keep_alives"`
	DrainResponseBody      bool    `json:"drain_response_body"`
}

type Retry struct {
	MaxAttempts        int      `json:"max_attempts"`
	RetryOn            []string `json:"retry_on"`
	RetryOnStatus      []int    `json:"retry_on_status"`
	RetryNonIdempotent bool     `json:"retry_non_idempotent"`
	PerTryTimeoutS     float64  `json:"per_try_timeout_s"`
	DeadlineS          float64  `json:"deadline_s"`
	Backoff            string   `json:"backoff"`
	BackoffBaseS       float64  `json:"backoff_base_s"`
	BackoffCapS        float64  `json:"backoff_cap_s"`
	BackoffMultiplier  float64  `json:"backoff_multiplier"`
	Jitter             string   `json:"jitter"`
	HonourRetryAfter   bool     `json:"honour_retry_after"`
}

type Client struct {
	Name      string    `json:"name"`
	Instances int       `json:"instances"`
	Transport Transport `json:"transport"`
	Retry     Retry     `json:"retry"`
}

// SlowClients are slowloris connections: opened at the instants given (seconds from the
// start), each dribbling HeaderBytes then BodyBytes at BytesPerS (0 = mute), then reading
// the response of Path and closing.
type SlowClients struct {
	ConnectAtS  []float64 `json:"connect_at_s"`
	BytesPerS   float64   `json:"bytes_per_s"`
	HeaderBytes int       `json:"header_bytes"`
	BodyBytes   int       `json:"body_bytes"`
	Path        string    `json:"path"`
}

type Config struct {
	Name            string              `json:"name"`
	Seed            int64               `json:"seed"`
	DurationS       float64             `json:"duration_s"`
	SampleIntervalS float64             `json:"sample_interval_s"`
	Server          Server              `json:"server"`
	Routes          []Route             `json:"routes"`
	Pools           map[string]Pool     `json:"pools"`
	Databases       map[string]Database `json:"databases"`
	Locks           []Lock              `json:"locks"`
	Clients         []Client            `json:"clients"`
	SlowClients     []SlowClients       `json:"slow_clients"`
}

func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// D converts seconds to a time.Duration.
func D(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
