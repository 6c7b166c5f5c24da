// mattn/go-sqlite3 with sqlite-hybrid, for hosts/run.sh (protocol: hosts/python/worker.py).
//
//	HYBRID_LIB=/path/to/libhybrid ./hybrid-go check|holder|waiter DB
//
// The per-connection pattern is hybridDriver below: a database/sql driver
// whose ConnectHook runs on every connection the pool opens. mattn's Open
// runs `PRAGMA busy_timeout` (5000 ms, or `_busy_timeout` from the DSN) on
// every connection, which replaces the hybrid busy handler, so the hook ends
// with `SELECT hybrid_busy_timeout(ms)`.
//
// Build: cgo (CGO_ENABLED=1, a C compiler). Extension loading is compiled in
// by default (the `sqlite_omit_load_extension` tag removes it); no build tag
// is needed. Debian's golang-github-mattn-go-sqlite3-dev links the system
// libsqlite3 (upstream: `-tags libsqlite3`); upstream's default bundles its
// own SQLite. Either way the process has one SQLite: load the library into no
// other.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// hybridDriver loads the extension into every connection and puts the
// hybrid handler in force with timeoutMs as its deadline.
func hybridDriver(lib string, timeoutMs int) *sqlite3.SQLiteDriver {
	return &sqlite3.SQLiteDriver{
		ConnectHook: func(conn *sqlite3.SQLiteConn) error {
			// Registered already if the library was loaded into an earlier
			// connection of this process (its auto-extension covers later ones).
			if _, err := conn.Exec("SELECT hybrid_version()", nil); err != nil {
				if err := conn.LoadExtension(lib, "sqlite3_hybrid_init"); err != nil {
					return fmt.Errorf("loading %s: %w", lib, err)
				}
			}
			_, err := conn.Exec(fmt.Sprintf("SELECT hybrid_busy_timeout(%d)", timeoutMs), nil)
			return err
		},
	}
}

const metricsSQL = `SELECT scope, mode, coalesce(connections, -1), coalesce(handler_active, -1),
	busy_events, acquired, gave_up, in_flight, wait_max_ms FROM hybrid_lock_metrics WHERE db = ?`

type metric struct {
	Scope         string  `json:"scope"`
	Mode          string  `json:"mode"`
	Connections   int64   `json:"connections"`
	HandlerActive int64   `json:"handler_active"`
	BusyEvents    int64   `json:"busy_events"`
	Acquired      int64   `json:"acquired"`
	GaveUp        int64   `json:"gave_up"`
	InFlight      int64   `json:"in_flight"`
	WaitMaxMs     float64 `json:"wait_max_ms"`
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func metrics(ctx context.Context, q queryer, file string) map[string]metric {
	real, err := filepath.EvalSymlinks(file)
	must(err)
	real, err = filepath.Abs(real)
	must(err)
	rows, err := q.QueryContext(ctx, metricsSQL, real)
	must(err)
	defer rows.Close()
	out := map[string]metric{}
	for rows.Next() {
		var m metric
		must(rows.Scan(&m.Scope, &m.Mode, &m.Connections, &m.HandlerActive, &m.BusyEvents,
			&m.Acquired, &m.GaveUp, &m.InFlight, &m.WaitMaxMs))
		out[m.Scope] = m
	}
	must(rows.Err())
	return out
}

func facts(ctx context.Context, q queryer, file string) map[string]any {
	var version, sqliteVersion, policy string
	must(q.QueryRowContext(ctx, "SELECT hybrid_version(), sqlite_version(), hybrid_busy_config()").
		Scan(&version, &sqliteVersion, &policy))
	var p map[string]any
	must(json.Unmarshal([]byte(policy), &p))
	return map[string]any{"hybrid_version": version, "sqlite_version": sqliteVersion, "policy": p,
		"metrics": metrics(ctx, q, file)}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func say(line string) { fmt.Println(line); os.Stdout.Sync() }

func result(v any) {
	b, err := json.Marshal(v)
	must(err)
	say("result " + string(b))
}

func check(ctx context.Context, file string) {
	db, err := sql.Open("sqlite3_hybrid", file)
	must(err)
	defer db.Close()
	db.SetMaxOpenConns(4)
	// Three connections checked out at once: the pool opens three, and the
	// hook runs on each.
	conns := make([]*sql.Conn, 3)
	for i := range conns {
		conns[i], err = db.Conn(ctx)
		must(err)
		var v string
		must(conns[i].QueryRowContext(ctx, "SELECT hybrid_version()").Scan(&v))
	}
	process := metrics(ctx, conns[0], file)["process"]
	checks := map[string]bool{
		"pool_three_connections": process.Connections == 3 && process.HandlerActive == 3,
	}
	notes := []string{fmt.Sprintf("pool of 3 via ConnectHook: connections %d, handler_active %d",
		process.Connections, process.HandlerActive)}

	// The gotcha: a plain driver's connection is registered by the
	// auto-extension, but mattn's PRAGMA busy_timeout replaced our handler.
	plain, err := sql.Open("sqlite3", file)
	must(err)
	defer plain.Close()
	pc, err := plain.Conn(ctx)
	must(err)
	process = metrics(ctx, pc, file)["process"]
	checks["plain_driver_loses_handler"] = process.Connections == 4 && process.HandlerActive == 3
	notes = append(notes, fmt.Sprintf("plain sqlite3 driver: handler_active %d/%d",
		process.HandlerActive, process.Connections))
	must(pc.Close())
	for _, c := range conns {
		must(c.Close())
	}
	out := facts(ctx, db, file)
	out["checks"] = checks
	out["notes"] = notes
	result(out)
}

func contend(ctx context.Context, role, file string) {
	db, err := sql.Open("sqlite3_hybrid", file)
	must(err)
	defer db.Close()
	conn, err := db.Conn(ctx) // BEGIN ... COMMIT must stay on one connection
	must(err)
	defer conn.Close()
	say("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	must(err)
	if strings.TrimSpace(line) != "go" {
		must(fmt.Errorf("expected go, got %q", line))
	}
	start := time.Now()
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	must(err)
	waited := time.Since(start)
	_, err = conn.ExecContext(ctx, "INSERT INTO t(who) VALUES (?)", "go-"+role)
	must(err)
	if role == "holder" {
		say("locked")
		hold := 300 * time.Millisecond
		if ms := os.Getenv("HOLD_MS"); ms != "" {
			d, err := time.ParseDuration(ms + "ms")
			must(err)
			hold = d
		}
		time.Sleep(hold)
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	must(err)
	out := facts(ctx, conn, file)
	if role == "waiter" {
		out["waited_ms"] = float64(waited.Microseconds()) / 1000
	}
	result(out)
}

func main() {
	lib := os.Getenv("HYBRID_LIB")
	if lib == "" || len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: HYBRID_LIB=... hybrid-go check|holder|waiter DB")
		os.Exit(2)
	}
	sql.Register("sqlite3_hybrid", hybridDriver(lib, 5000))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch role, file := os.Args[1], os.Args[2]; role {
	case "check":
		check(ctx, file)
	case "holder", "waiter":
		contend(ctx, role, file)
	default:
		fmt.Fprintln(os.Stderr, "unknown role", role)
		os.Exit(2)
	}
}
