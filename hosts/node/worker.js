// better-sqlite3 with sqlite-hybrid, for hosts/run.sh (protocol: hosts/python/worker.py).
//
//   HYBRID_LIB=/path/to/libhybrid node worker.js check|holder|waiter DB
//
// The per-connection pattern is openHybrid() below. better-sqlite3's
// constructor sets a busy timeout (`timeout`, 5000 ms by default) with
// sqlite3_busy_timeout(), which replaces the hybrid busy handler on every
// connection it opens, so each connection ends with
// `SELECT hybrid_busy_timeout(ms)`. better-sqlite3 carries its own SQLite:
// load the library into no other SQLite in the same process.
'use strict';

const Database = require('better-sqlite3');
const fs = require('fs');
const readline = require('readline');

const HYBRID_LIB = process.env.HYBRID_LIB; // path without .so is fine: SQLite adds it
const HOLD_MS = Number(process.env.HOLD_MS || 300);

function openHybrid(file, options = {}) {
  const db = new Database(file, options);
  try {
    // Registered already if the library was loaded into an earlier
    // connection of this process (its auto-extension covers later ones).
    db.prepare('SELECT hybrid_version()').get();
  } catch {
    db.loadExtension(HYBRID_LIB); // the first connection
  }
  // Our handler back in force, with better-sqlite3's timeout as deadline.
  db.prepare('SELECT hybrid_busy_timeout(?)').get(options.timeout ?? 5000);
  return db;
}

const METRICS_SQL =
  'SELECT scope, mode, connections, handler_active, busy_events, acquired, gave_up, in_flight, ' +
  'wait_max_ms FROM hybrid_lock_metrics WHERE db = ?';

function processRow(db, file) {
  return db.prepare(METRICS_SQL).all(fs.realpathSync(file)).find((r) => r.scope === 'process');
}

function facts(db, file) {
  const row = db.prepare('SELECT hybrid_version() AS v, sqlite_version() AS s, hybrid_busy_config() AS p').get();
  const metrics = {};
  for (const r of db.prepare(METRICS_SQL).all(fs.realpathSync(file))) metrics[r.scope] = r;
  return { hybrid_version: row.v, sqlite_version: row.s, policy: JSON.parse(row.p), metrics };
}

function say(line) {
  process.stdout.write(line + '\n');
}

function check(file) {
  const checks = {};
  const notes = [];
  const a = openHybrid(file);
  const b = openHybrid(file, { timeout: 3000 });
  let row = processRow(b, file);
  checks.pattern_two_connections = row.connections === 2 && row.handler_active === 2;
  checks.timeout_carried = JSON.parse(b.prepare('SELECT hybrid_busy_config() AS p').get().p).timeout_ms === 3000;
  notes.push(`openHybrid x2: connections ${row.connections}, handler_active ${row.handler_active}`);

  // The gotcha: a plain constructor after the load is registered by the
  // auto-extension, but its busy timeout has replaced our handler.
  const c = new Database(file);
  row = processRow(c, file);
  checks.plain_constructor_loses_handler = row.connections === 3 && row.handler_active === 2;
  c.prepare('SELECT hybrid_busy_timeout(5000)').get();
  row = processRow(c, file);
  checks.reinstalled = row.handler_active === 3;
  notes.push(`plain new Database(): handler_active 2/3, after hybrid_busy_timeout(5000) ${row.handler_active}/3`);

  // loadExtension() on every connection also ends with our handler, but a
  // connection that was registered already is registered a second time.
  const other = file.replace(/\.db$/, '-reload.db');
  const d = new Database(other);
  d.loadExtension(HYBRID_LIB);
  const e = new Database(other);
  e.loadExtension(HYBRID_LIB);
  e.prepare('SELECT hybrid_busy_timeout(5000)').get();
  row = processRow(e, other);
  checks.reload_handler_in_force = row.handler_active === row.connections;
  notes.push(`loadExtension() on both of 2 connections: connections ${row.connections}, handler_active ${row.handler_active}`);

  for (const db of [a, b, c, d, e]) db.close();
  const out = facts(openHybrid(file), file);
  out.checks = checks;
  out.notes = notes;
  say('result ' + JSON.stringify(out));
}

async function contend(role, file) {
  const db = openHybrid(file);
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  say('ready');
  const go = await lines.next();
  if (go.done || go.value.trim() !== 'go') throw new Error(`expected go, got ${go.value}`);
  const start = process.hrtime.bigint();
  db.exec('BEGIN IMMEDIATE');
  const waitedMs = Number(process.hrtime.bigint() - start) / 1e6;
  db.prepare('INSERT INTO t(who) VALUES (?)').run(`node-${role}`);
  if (role === 'holder') {
    say('locked');
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
  }
  db.exec('COMMIT');
  const out = facts(db, file);
  if (role === 'waiter') out.waited_ms = waitedMs;
  say('result ' + JSON.stringify(out));
  db.close();
  process.exit(0);
}

const [role, file] = process.argv.slice(2);
if (!HYBRID_LIB || !file) {
  console.error('usage: HYBRID_LIB=... node worker.js check|holder|waiter DB');
  process.exit(2);
}
if (role === 'check') check(file);
else if (role === 'holder' || role === 'waiter') contend(role, file).catch((e) => { console.error(e); process.exit(1); });
else { console.error(`unknown role ${role}`); process.exit(2); }
