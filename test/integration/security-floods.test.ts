/**
 * A client with a valid certificate that sends without end against the real server over real
 * mTLS: after its answer (the server is done with the connection), or as a flood of control pings
 * whose pongs it never reads. The server must hold it back (TCP backpressure, not memory), cut it
 * off, and go on serving everyone else.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { decodeHealthPong, encodeControlFromAgent, encodeControlOpen, encodeHealthPing } from '../../protocol/frames.js';
import type { RawClient } from './raw-client.js';
import { SecurityBench } from './security-bench.js';

const MiB = 1024 * 1024;
/** The test server's handshake_timeout (harness.ts), which is also how long a finished connection may linger. */
const LINGER_S = 2;
const KEEPALIVE_S = 1;

/** The process's resident memory, in bytes. */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Writes `data` up to `times` times, each time waiting (at most `stallMs`) until the kernel took it.
 * Stops at the first write the server does not take in time, or when the connection closes.
 * Returns the bytes taken.
 */
async function floodUntilHeld(c: RawClient, data: Buffer, times: number, stallMs: number): Promise<number> {
  let taken = 0;
  for (let i = 0; i < times && !c.closed; i++) {
    const ok = await c.writeFlushed(data, stallMs).then(
      () => true,
      () => false,
    );
    if (!ok) break;
    taken += data.length;
  }
  return taken;
}

describe('clients that flood the server (real server, raw mTLS clients)', { timeout: 120_000 }, () => {
  const bench = new SecurityBench();
  const { client, stillServes } = bench;

  before(() => bench.start('nbackup-it-flood-'));
  after(() => bench.stop());

  it('a peer that keeps sending after its health answer is held back and cut off', async () => {
    const pid = bench.server!.proc.pid!;
    const before = rss(pid);
    const c = client({ allowHalfOpen: true });
    await c.connected();
    c.write(encodeHealthPing());
    await c.read(decodeHealthPong, 5000, 'health answer');
    const answeredAt = Date.now();
    // 256 MiB if the server read it all; it must stop reading long before.
    const taken = await floodUntilHeld(c, Buffer.alloc(MiB, 0x41), 256, 3000);
    await c.waitClosed((LINGER_S + 10) * 1000);
    const grown = rss(pid) - before;
    const lingered = c.closedAt - answeredAt;
    // Loopback socket buffers hold a few MiB; the server's reader holds 64 KiB.
    assert.ok(taken < 48 * MiB, `the server took ${taken / MiB} MiB after its answer`);
    assert.ok(grown < 48 * MiB, `server RSS grew by ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(lingered < (LINGER_S + 8) * 1000, `the finished connection stayed open ${lingered} ms`);
    await stillServes();
  });

  it('a control channel that pings without reading its pongs is held back and closed', async () => {
    const pid = bench.server!.proc.pid!;
    const before = rss(pid);
    const c = client();
    await c.connected();
    c.socket.pause(); // never read a pong
    c.write(encodeControlOpen({ keepaliveSeconds: KEEPALIVE_S }));
    const ping = encodeControlFromAgent({ type: 'ping', timestampNs: 1n });
    const burst = Buffer.concat(Array.from({ length: Math.floor(MiB / ping.length) }, () => ping));
    // 128 MiB of pings if the server answered them all into an unread socket.
    const taken = await floodUntilHeld(c, burst, 128, 4000);
    await c.waitClosed(KEEPALIVE_S * 2500 + 10_000);
    const grown = rss(pid) - before;
    assert.ok(taken < 48 * MiB, `the server took ${taken / MiB} MiB of pings whose pongs were not read`);
    assert.ok(grown < 48 * MiB, `server RSS grew by ${(grown / MiB).toFixed(1)} MiB`);
    await bench.server!.waitForLog((l) => l.msg === 'control channel closed' && /pongs not taken/.test(String(l.reason)), 5000);
    await stillServes();
  });
});
