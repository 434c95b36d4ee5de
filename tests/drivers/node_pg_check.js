// node-postgres through pgmux: named prepared statements from several concurrent clients.
//
// A query with a `name` is parsed once per connection as that named statement; later runs send
// only Bind/Execute. Six clients run at once, so behind a pooler in transaction mode with a
// smaller pool each client's statements run on different servers. Every client uses the same
// statement names (q0..q19, and `item` with a different text per client), unnamed
// parameterised queries, an error on a named statement, and named statements inside a
// committed and a rolled-back transaction.
//
// Usage: node node_pg_check.js [HOST PORT USER PASSWORD DBNAME] (else PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE). Prints a summary that depends only on the results, so runs against
// Postgres directly and through pgmux print the same; exits non-zero on any error.
'use strict';

const crypto = require('crypto');
const { Client } = require('pg');

const CLIENTS = 6;
const NAMES = 20;
const REPEAT = 10;

const INSERT = 'INSERT INTO nd_log (client, step, v) VALUES ($1, $2, $3)';
const SUM = 'SELECT sum(v)::int AS s, count(*)::int AS n FROM nd_log WHERE client = $1';
const GROUP = 'SELECT count(*)::int AS n, sum(id)::int AS s FROM nd_items WHERE grp = $1';

function config() {
  const a = process.argv.slice(2);
  if (a.length === 5) {
    return { host: a[0], port: Number(a[1]), user: a[2], password: a[3], database: a[4] };
  }
  if (a.length === 0) return {}; // node-postgres reads PGHOST, PGPORT, ...
  throw new Error('usage: node node_pg_check.js [HOST PORT USER PASSWORD DBNAME]');
}

async function connect() {
  const c = new Client({ ...config(), connectionTimeoutMillis: 10000 });
  await c.connect();
  return c;
}

async function setup() {
  const c = await connect();
  try {
    await c.query(`
      DROP TABLE IF EXISTS nd_items, nd_log;
      CREATE TABLE nd_items (id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL);
      INSERT INTO nd_items SELECT g, g % 10, 'item-' || g FROM generate_series(1, 500) g;
      CREATE TABLE nd_log (client int, step int, v bigint, PRIMARY KEY (client, step));`);
  } finally {
    await c.end();
  }
}

async function expectError(promise, code) {
  try {
    await promise;
  } catch (e) {
    if (e.code === code) return `error ${code}`;
    throw e;
  }
  throw new Error(`expected error ${code}`);
}

async function work(c, i) {
  const out = [];
  for (let rep = 0; rep < REPEAT; rep++) {
    for (let k = 0; k < NAMES; k++) {
      const text = `SELECT $1::int + ${k} AS v`;
      const r = await c.query({ name: `q${k}`, text, values: [i * 100 + rep] });
      out.push(r.rows[0].v);
    }
    // The same name on every client, a different text on each.
    const item = await c.query({
      name: 'item',
      text: `SELECT id, name FROM nd_items WHERE id = $1::int + ${i}`,
      values: [rep + 1],
      rowMode: 'array',
    });
    out.push(item.rows);
    // Unnamed parameterised queries.
    const grp = await c.query(GROUP, [(i + rep) % 10]);
    out.push(grp.rows[0]);
  }

  // An error on a named statement, then the same statement again.
  const div = (d) => c.query({ name: 'div', text: 'SELECT 100 / $1::int AS v', values: [d] });
  out.push((await div(4)).rows[0].v);
  out.push(await expectError(div(0), '22012'));
  out.push((await div(5)).rows[0].v);

  // Named statements in a committed transaction.
  await c.query('BEGIN');
  for (let step = 0; step < 5; step++) {
    await c.query({ name: 'ins', text: INSERT, values: [i, step, i * 10 + step] });
  }
  const inTx = await c.query({ name: 'sum', text: SUM, values: [i] });
  out.push(inTx.rows[0]);
  await c.query('COMMIT');

  // And in a transaction that fails and is rolled back.
  await c.query('BEGIN');
  await c.query({ name: 'ins', text: INSERT, values: [i, 50, 1] });
  out.push(await expectError(
    c.query({ name: 'ins', text: INSERT, values: [i, 50, 2] }),
    '23505'));
  await c.query('ROLLBACK');
  const after = await c.query({ name: 'sum', text: SUM, values: [i] });
  out.push(after.rows[0]);
  return out;
}

async function main() {
  await setup();
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) clients.push(await connect());
  let results;
  try {
    results = await Promise.all(clients.map((c, i) => work(c, i)));
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  const c = await connect();
  const log = (await c.query('SELECT count(*)::int AS n, sum(v)::int AS s FROM nd_log')).rows[0];
  await c.end();

  const hash = crypto.createHash('sha256');
  results.forEach((out, i) => hash.update(`${i}:${JSON.stringify(out)}\n`));
  const numbers = results.flat().filter((x) => typeof x === 'number');
  const named = numbers.reduce((a, b) => a + b, 0);
  console.log(`clients: ${results.length}`);
  console.log(`results per client: ${[...new Set(results.map((o) => o.length))].join(',')}`);
  console.log(`sum of numeric results: ${named}`);
  console.log(`nd_log rows, sum: ${log.n}, ${log.s}`);
  console.log(`sha256 of all results: ${hash.digest('hex')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
