/**
 * The upgrade handover over a real unix socket with real fds (SCM_RIGHTS through the native
 * addon): the new side receives the old side's listening sockets, serves them, takes over, and
 * the ports keep answering after the old process closed its copies and exited. No root needed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { connectPredecessor } from '../../../src/agent/handover.js';
import { defaultAddonPath, loadNative } from '../../../src/capture/native.js';
import { silentLogger } from '../../../src/telemetry/log.js';

const skip = existsSync(defaultAddonPath()) ? false : 'native addon not built (make build-native)';

function startOld(path: string): Promise<{ child: ChildProcess; ports: number[]; lines: () => string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'handover-old-agent.ts'), path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out: string[] = [];
  let buf = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        out.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        const first = JSON.parse(out[0]!) as { ports?: number[] };
        if (first.ports) resolve({ child, ports: first.ports, lines: () => out });
      }
    });
    child.once('exit', (code) => reject(new Error(`old agent stand-in exited ${code}`)));
  });
}

function ask(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    c.on('data', (d) => {
      got += d;
    });
    c.once('end', () => resolve(got));
    c.once('error', reject);
  });
}

t.test('handover: listening sockets pass to the new process and outlive the old one', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-handover-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'handover.sock');
  const old = await startOld(path);
  t.teardown(() => old.child.kill('SIGKILL'));

  const pred = connectPredecessor(path, loadNative(), silentLogger());
  t.ok(pred, 'the old agent answered');
  t.equal(pred!.pods.length, 1);
  const pod = pred!.pods[0]!;
  t.same({ uid: pod.uid, cookie: pod.netnsCookie, slot: pod.slot, address: pod.listeners.address }, { uid: 'pod-1', cookie: 42n, slot: 7, address: '127.0.0.1' });
  const fds = [pod.listeners.outbound, pod.listeners.inboundPlaintext, pod.listeners.tunnel];
  t.equal(new Set(fds).size, 3, 'three distinct fds received');

  // Serve them here: the same kernel sockets, so the old ports.
  const servers = await Promise.all(
    fds.map(
      (fd) =>
        new Promise<net.Server>((resolve) => {
          const s = net.createServer((c) => c.end('new\n'));
          s.listen({ fd }, () => resolve(s));
        }),
    ),
  );
  t.teardown(() => {
    for (const s of servers) s.close();
  });
  for (const [i, s] of servers.entries()) t.equal((s.address() as net.AddressInfo).port, old.ports[i], `socket ${i} is the old agent's port ${old.ports[i]}`);

  const { drainMs } = pred!.takeOver();
  t.equal(drainMs, 1234, 'the old agent answered "draining" with its drain timeout');
  t.notOk(existsSync(path), 'the old agent stopped listening on the handover socket before answering');
  await new Promise<void>((resolve) => old.child.once('exit', () => resolve()));
  t.ok(old.lines().some((l) => l.includes('"closed":true')), 'the old agent closed its copies and exited');
  // Every port answers, from this process, with the old process gone: never refused.
  for (const port of old.ports) t.equal(await ask(port), 'new\n', `port ${port} served by the new process`);
});

t.test('handover: the new side hanging up before taking over leaves the old one serving', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-handover-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'handover.sock');
  const old = await startOld(path);
  t.teardown(() => old.child.kill('SIGKILL'));
  const pred = connectPredecessor(path, loadNative(), silentLogger());
  for (const fd of [pred!.pods[0]!.listeners.outbound, pred!.pods[0]!.listeners.inboundPlaintext, pred!.pods[0]!.listeners.tunnel]) loadNative().closeFd(fd);
  pred!.abort();
  const deadline = Date.now() + 5000;
  while (!old.lines().some((l) => l.includes('"resumed":1')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(old.lines().some((l) => l.includes('"resumed":1')), 'the old agent resumed');
  for (const port of old.ports) t.equal(await ask(port), 'old\n', `port ${port} still served by the old process`);
});

t.test('handover: no agent on the socket means a fresh start', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-handover-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.equal(connectPredecessor(join(dir, 'none.sock'), loadNative(), silentLogger()), undefined);
});
