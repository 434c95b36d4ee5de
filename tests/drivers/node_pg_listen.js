// LISTEN/NOTIFY through node-postgres (client.on('notification')): six listeners on two
// channels, a notifier sending NOTIFY and pg_notify (one in a transaction that rolls back),
// the listeners running queries meanwhile. Prints what each listener received, for
// comparison with a direct run.
//
// Usage: node node_pg_listen.js HOST PORT USER PASSWORD DBNAME
const { Client } = require('pg');

const [host, port, user, password, database] = process.argv.slice(2);
const N = 6;

async function main() {
  const cfg = { host, port: Number(port), user, password, database };
  const got = [];
  const ends = [];
  const listeners = [];
  for (let i = 0; i < N; i++) {
    const c = new Client(cfg);
    await c.connect();
    got.push([]);
    ends.push(new Promise((resolve) => {
      c.on('notification', (n) => {
        got[i].push(`${n.channel}:${n.payload}`);
        if (n.payload === 'end') resolve();
      });
    }));
    await c.query(`LISTEN chan_${'ab'[i % 2]}`);
    listeners.push(c);
  }
  const n = new Client(cfg);
  await n.connect();
  const busy = listeners.map(async (c) => {
    for (let k = 0; k < 20; k++) {
      const r = await c.query('SELECT 1 AS one');
      if (r.rows[0].one !== 1) throw new Error('bad answer');
    }
  });
  for (let k = 0; k < 10; k++) {
    await n.query(`NOTIFY chan_a, 'a${k}'`);
    await n.query('SELECT pg_notify($1, $2)', ['chan_b', `b${k}`]);
  }
  await n.query("BEGIN; NOTIFY chan_a, 'rolled back'; ROLLBACK");
  await n.query("NOTIFY chan_a, 'end'; NOTIFY chan_b, 'end'");
  await Promise.all(busy);
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), 15000));
  await Promise.race([Promise.all(ends), timeout]);
  for (const c of listeners) await c.end();
  await n.end();
  for (let i = 0; i < N; i++) console.log(`node-postgres listener ${i}: ${got[i].join(' ')}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
