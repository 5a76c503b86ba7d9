/**
 * Capture on a real kernel: connect4/6 + sock_ops at a test cgroup (this process joins it),
 * sk_lookup in pod netns, listeners opened by the native addon. Root only.
 */
import { spawn } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { statSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { CaptureManager, type EnrolledPod } from '../../../src/capture/capture-manager.js';
import { MAP, u64Key, encodeStamp, u32Key } from '../../../src/capture/maps.js';
import { loadNative } from '../../../src/capture/native.js';
import { type CaptureLab, cgroup2Root, fetchLine, makeCaptureLab, netnsLinks, serveFd, cgroupPrograms, sh, type Teardown, readLine } from './fixture.js';

if (process.getuid?.() !== 0) {
  t.plan(0, 'capture e2e tests need root');
  process.exit(0);
}

const native = loadNative();

/** The app of pod B: plain servers on 8080 and 9999 inside B, answering b-app / b-9999. */
async function startPodBApps(tt: Teardown, lab: CaptureLab): Promise<void> {
  await serveFd(tt, await native.openListener(lab.path.b, '::', 8080, 64), 'b-app');
  await serveFd(tt, await native.openListener(lab.path.b, '::', 9999, 64), 'b-9999');
}

interface ServedPod {
  pod: EnrolledPod;
  originals: Array<{ address: string; port: number; family: number } | string>;
  inbound: Array<{ address: string; port: number; family: number }>;
  close(): Promise<void>;
}

/** Serve an enrolled pod's three listeners the way the proxy will (plain net.Server). */
async function servePod(tt: Teardown, capture: CaptureManager, pod: EnrolledPod, name: string): Promise<ServedPod> {
  const originals: ServedPod['originals'] = [];
  const inbound: ServedPod['inbound'] = [];
  const out = await serveFd(tt, pod.listeners.outbound, `${name}-15001`, (s) => {
    try {
      originals.push(capture.originalDestination(s));
    } catch (err) {
      originals.push(`error: ${(err as Error).message}`);
    }
  });
  const inb = await serveFd(tt, pod.listeners.inboundPlaintext, `${name}-15006`, (s) => {
    inbound.push(capture.inboundDestination(s));
  });
  const tun = await serveFd(tt, pod.listeners.tunnel, `${name}-15008`);
  return {
    pod,
    originals,
    inbound,
    close: async () => {
      await out.close();
      await inb.close();
      await tun.close();
    },
  };
}

function newCapture(tt: Teardown, lab: CaptureLab): CaptureManager {
  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
  tt.teardown(() => capture.uninstall());
  return capture;
}

t.test('outbound: enrolled pod lands on its 15001 with the exact original destination', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  const capture = newCapture(t, lab);
  await capture.start();

  // Before enrolment A connects directly.
  t.equal(await fetchLine(lab.path.a, lab.ip.b, 8080), 'b-app', 'unenrolled pod connects directly');

  const podA = await capture.enroll({
    uid: 'ns1/pod-a',
    netnsPath: lab.path.a,
    ips: [lab.ip.a, lab.ip.a6],
    excludeOutboundPorts: [9999],
    excludeInboundPorts: [],
  });
  const a = await servePod(t, capture, podA, 'a');

  const cases: Array<[string, number, string, number]> = [
    [lab.ip.b, 8080, lab.ip.b, 4], // pod IP
    [lab.ip.vip, 80, lab.ip.vip, 4], // Service VIP (no route needed: rewritten before routing)
    [lab.ip.external, 443, lab.ip.external, 4], // external-looking
    [lab.ip.b6, 8080, lab.ip.b6, 6], // IPv6 pod IP -> [::1]:15001
    ['2001:db8::7', 443, '2001:db8::7', 6], // IPv6 external-looking
    ['::ffff:10.96.0.7', 80, lab.ip.vip, 4], // IPv4-mapped on an IPv6 socket (connect6)
  ];
  for (const [host, port, want, family] of cases) {
    const before = a.originals.length;
    t.equal(await fetchLine(lab.path.a, host, port), 'a-15001', `${host}:${port} reaches A's outbound listener`);
    t.same(a.originals[before], { address: want, port, family }, `original destination of ${host}:${port}`);
  }
  t.equal(await fetchLine(lab.path.a, lab.ip.b, 9999), 'b-9999', 'excluded outbound port connects directly');

  // The pod's own loopback is never redirected.
  const local = await serveFd(t, await native.openListener(lab.path.a, '127.0.0.1', 7000, 8), 'a-local');
  t.equal(await fetchLine(lab.path.a, '127.0.0.1', 7000), 'a-local', 'loopback destination untouched');
  await local.close();

  // The agent's own sockets (SO_MARK) are never redirected: no loop.
  const own = await capture.openAgentSocket(lab.path.a, 4);
  t.equal(await readLine(new net.Socket({ fd: own }), lab.ip.b, 8080, 2000), 'b-app', 'openAgentSocket + net.Socket.connect goes direct');
  const own6 = await capture.openAgentSocket(lab.path.a, 6);
  t.equal(await readLine(new net.Socket({ fd: own6 }), lab.ip.b6, 8080, 2000), 'b-app', 'IPv6 agent socket goes direct');
  const connected = await capture.connectFromAgent(lab.path.a, lab.ip.b, 8080, { timeoutMs: 2000 });
  t.equal(
    await new Promise<string>((resolve, reject) => {
      const s = connected;
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().trim());
      });
      s.once('error', reject);
    }),
    'b-app',
    'connectFromAgent goes direct',
  );
  t.equal(await fetchLine(lab.path.a, lab.ip.b, 8080, 2000, 0x1234), 'a-15001', 'a foreign mark is still captured');

  // Another pod, never enrolled, connects directly.
  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 8080), 'b-app', 'pod C (not enrolled) connects directly');
  t.equal(a.originals.filter((o) => typeof o === 'string').length, 0, 'no lookup failed');

  // Bookkeeping: the record was consumed (read once, deleted).
  const peers = JSON.parse(sh('bpftool', ['-j', 'map', 'dump', 'pinned', `${lab.pinRoot}/maps/${MAP.originalByPeer}`]));
  t.equal(peers.length, 0, 'no original destination left behind');
  await a.close();
});

t.test('inbound: plaintext to an enrolled pod lands on 15006 with the original destination; 15008 is not stolen', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  const capture = newCapture(t, lab);
  await capture.start();
  const podB = await capture.enroll({
    uid: 'ns1/pod-b',
    netnsPath: lab.path.b,
    ips: [lab.ip.b, lab.ip.bFromC, lab.ip.b6],
    excludeOutboundPorts: [],
    excludeInboundPorts: [9999],
  });
  const b = await servePod(t, capture, podB, 'b');

  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 8080), 'b-15006', 'app port from pod C -> 15006');
  t.same(b.inbound.at(-1), { address: lab.ip.bFromC, port: 8080, family: 4 }, 'getsockname = original destination');
  t.equal(await fetchLine(lab.path.a, lab.ip.b6, 8080), 'b-15006', 'IPv6 app port from pod A -> 15006');
  t.same(b.inbound.at(-1), { address: lab.ip.b6, port: 8080, family: 6 }, 'IPv6 original destination');
  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 15008), 'b-15008', '15008 reaches the tunnel listener');
  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 9999), 'b-9999', 'excluded inbound port reaches the app');
  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 4242), 'b-15006', 'any other port -> 15006 (even with nothing listening)');

  // The agent delivering to the app from inside the pod: marked socket, via loopback -> app.
  const own = await capture.openAgentSocket(lab.path.b, 4);
  t.equal(await readLine(new net.Socket({ fd: own }), lab.ip.b, 8080, 2000), 'b-app', 'agent in-pod connection reaches the app');

  // Released: inbound goes straight to the app again, and no sk_lookup link is left.
  t.ok(await capture.release(podB.uid), 'released');
  await b.close();
  t.equal(await fetchLine(lab.path.c, lab.ip.bFromC, 8080), 'b-app', 'after release inbound reaches the app');
  t.same(netnsLinks(podB.netnsIno), [], 'no netns link left in B');
});

t.test('inbound: when sk_assign fails the connection is dropped (never plaintext to the app) and counted', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  // An IPv4-only 15006 socket (the fallback for a netns without IPv6): the kernel refuses
  // to assign it to an IPv6 connection (EAFNOSUPPORT), a real failed bpf_sk_assign.
  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath, listenAddress: '0.0.0.0' });
  t.teardown(() => capture.uninstall());
  await capture.start();
  const podB = await capture.enroll({
    uid: 'ns1/pod-b',
    netnsPath: lab.path.b,
    ips: [lab.ip.b, lab.ip.b6],
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
  });
  await servePod(t, capture, podB, 'b');
  t.same(capture.counters(), { skLookupAssignFailed: 0, skLookupNoSocket: 0, podShareRefused: 0, noRecordRefused: 0 }, 'nothing counted yet');

  t.equal(await fetchLine(lab.path.a, lab.ip.b, 8080), 'b-15006', 'IPv4 is steered to the IPv4 15006 socket');
  // The app listens on [::]:8080: a passed packet would reach it in plaintext.
  const v6 = await fetchLine(lab.path.a, lab.ip.b6, 8080).then(
    (line) => `answered: ${line}`,
    (err: NodeJS.ErrnoException) => `refused: ${err.code ?? err.message}`,
  );
  t.equal(v6, 'refused: ECONNREFUSED', 'IPv6 to the app port is refused, not handed to the app');
  t.equal(capture.counters().skLookupAssignFailed, 1, 'the failed assign is counted once');
  t.equal(capture.counters().skLookupNoSocket, 0);
});

t.test('connects from a pod netns to a SYN-dropping destination: libuv pool free, aborts at once, capped per pod', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  // Pod B silently drops SYNs to 9998: a connect there waits for its timeout.
  const nft = (...args: string[]) => sh('ip', ['netns', 'exec', lab.netns.b, 'nft', ...args]);
  nft('add', 'table', 'inet', 'skein_test');
  nft('add', 'chain', 'inet', 'skein_test', 'in', '{ type filter hook input priority 0; }');
  nft('add', 'rule', 'inet', 'skein_test', 'in', 'tcp', 'dport', '9998', 'drop');
  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath }, { connector: { maxConnectsPerNetns: 8, maxQueuedPerNetns: 1 } });
  t.teardown(() => capture.uninstall());

  // Eight connects into the black hole (twice the libuv pool)...
  const hanging = Array.from({ length: 8 }, () => capture.connectFromAgent(lab.path.a, lab.ip.b, 9998, { timeoutMs: 2500 }).then(
    () => 'connected',
    (e: { code?: string }) => e.code,
  ));
  await new Promise((r) => setTimeout(r, 200));
  // ...leave the pool free: crypto/fs/dns work of every other pod goes on.
  const poolStarted = performance.now();
  await Promise.all(Array.from({ length: 4 }, () => new Promise((r, j) => pbkdf2('x', 'y', 1, 32, 'sha256', (e, k) => (e ? j(e) : r(k))))));
  const poolMs = performance.now() - poolStarted;
  t.ok(poolMs < 500, `libuv pool answered in ${poolMs.toFixed(0)} ms while 8 connects hang`);
  // The same pod's next connects wait for a slot (one may queue here), then are refused.
  const queued = capture.connectFromAgent(lab.path.a, lab.ip.b, 8080, { timeoutMs: 6000 });
  await t.rejects(capture.connectFromAgent(lab.path.a, lab.ip.b, 8080), { code: 'SKEIN_CAPTURE_TOO_MANY_CONNECTS' }, 'over the cap and the queue: refused at once');
  const fromC = await capture.connectFromAgent(lab.path.c, lab.ip.bFromC, 8080, { timeoutMs: 2000 });
  t.equal(await new Promise<string>((r) => fromC.once('data', (d) => r(String(d).trim()))), 'b-app', 'another pod connects meanwhile');
  fromC.destroy();
  t.same(await Promise.all(hanging), Array(8).fill('SKEIN_CAPTURE_CONNECT_TIMEOUT'), 'the black-holed connects time out with a code');
  const late = await queued;
  t.equal(await new Promise<string>((r) => late.once('data', (d) => r(String(d).trim()))), 'b-app', 'the queued connect got a slot and connected');
  late.destroy();

  // Aborted while waiting for the SYN-ACK: rejects at once.
  const ac = new AbortController();
  const aborted = capture.connectFromAgent(lab.path.a, lab.ip.b, 9998, { signal: ac.signal, timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 100));
  const abortAt = performance.now();
  ac.abort(new Error('client went away'));
  await t.rejects(aborted, { message: 'client went away' });
  t.ok(performance.now() - abortAt < 200, 'abort honoured at once');
  const ok = await capture.connectFromAgent(lab.path.a, lab.ip.b, 8080, { timeoutMs: 2000 });
  t.equal(await new Promise<string>((r) => ok.once('data', (d) => r(String(d).trim()))), 'b-app', 'the pod connects again once under the cap');
  ok.destroy();
});

t.test('enrol and release a running pod while a client loop runs: switches within a second; nothing left', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  const capture = newCapture(t, lab);
  await capture.start();

  const seen: Array<{ at: number; tag: string }> = [];
  let running = true;
  const loop = (async () => {
    const deadline = Date.now() + 20_000;
    while (running && Date.now() < deadline) {
      try {
        seen.push({ at: Date.now(), tag: await fetchLine(lab.path.a, lab.ip.b, 8080, 1000) });
      } catch (err) {
        seen.push({ at: Date.now(), tag: `error ${(err as Error).message}` });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  t.teardown(async () => {
    running = false;
    await loop;
  });
  await new Promise((r) => setTimeout(r, 200));
  const enrolAt = Date.now();
  const podA = await capture.enroll({ uid: 'ns1/pod-a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] });
  const a = await servePod(t, capture, podA, 'a');
  await new Promise((r) => setTimeout(r, 500));
  const firstCaptured = seen.find((s) => s.at >= enrolAt && s.tag === 'a-15001');
  t.ok(firstCaptured, 'client loop switched to the outbound listener');
  t.ok(firstCaptured && firstCaptured.at - enrolAt < 1000, `captured ${firstCaptured ? firstCaptured.at - enrolAt : '?'} ms after enrol started`);

  const releaseAt = Date.now();
  await capture.release(podA.uid);
  // Drain: connects redirected just before the release may still sit in the accept queue;
  // closing the listener at once would reset them. (The proxy must do the same.)
  await new Promise((r) => setTimeout(r, 300));
  await a.close();
  await new Promise((r) => setTimeout(r, 500));
  running = false;
  await loop;
  const firstDirect = seen.find((s) => s.at >= releaseAt && s.tag === 'b-app');
  t.ok(firstDirect && firstDirect.at - releaseAt < 1000, `direct again ${firstDirect ? firstDirect.at - releaseAt : '?'} ms after release`);
  const after = seen.filter((s) => s.at > releaseAt + 50);
  t.ok(after.length > 5 && after.every((s) => s.tag === 'b-app'), `every connection after release went direct (${after.length})`);
  const errors = seen.filter((s) => s.tag.startsWith('error'));
  t.equal(errors.length, 0, `no client errors (${errors.map((e) => e.tag).join('; ')})`);

  // Nothing of skein left in the pod netns: no sk_lookup link, no listener, not enrolled.
  t.same(netnsLinks(podA.netnsIno), [], 'no netns link');
  const listening = sh('ip', ['netns', 'exec', lab.netns.a, 'ss', '-Htln']);
  t.notMatch(listening, /:1500[168]\b/, 'no 15001/15006/15008 listener left');
  const enrolledFd = native.objGet(`${lab.pinRoot}/maps/${MAP.enrolled}`);
  t.equal(native.mapLookup(enrolledFd, u64Key(podA.netnsCookie)), null, 'netns not in the enrolled map');
  native.closeFd(enrolledFd);
});

t.test('pod netns vanishes while enrolled: reconcile cleans it up', async (t) => {
  const lab = await makeCaptureLab(t);
  const capture = newCapture(t, lab);
  await capture.start();
  const podC = await capture.enroll({ uid: 'ns1/pod-c', netnsPath: lab.path.c, ips: [lab.ip.c], excludeOutboundPorts: [], excludeInboundPorts: [] });
  const podA = await capture.enroll({ uid: 'ns1/pod-a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] });
  for (const fd of Object.values(podC.listeners)) if (typeof fd === 'number') native.closeFd(fd);
  sh('ip', ['netns', 'del', lab.netns.c]);
  const released = await capture.reconcile([
    { uid: 'ns1/pod-c', netnsPath: lab.path.c },
    { uid: 'ns1/pod-a', netnsPath: lab.path.a },
  ]);
  t.same(released, ['ns1/pod-c'], 'only the pod whose netns vanished is released');
  t.same(
    capture.enrolled().map((p) => p.uid),
    ['ns1/pod-a'],
    'A stays enrolled',
  );
  t.same(await capture.reconcile([]), ['ns1/pod-a'], 'a pod no longer live is released');
  await t.rejects(
    capture.enroll({ uid: 'ns1/host-net', netnsPath: '/proc/self/ns/net', ips: ['10.0.0.9'], excludeOutboundPorts: [], excludeInboundPorts: [] }),
    { code: 'SKEIN_CAPTURE_HOST_NETWORK_POD' },
    "a pod in the agent's own netns is refused",
  );
  for (const fd of Object.values(podA.listeners)) if (typeof fd === 'number') native.closeFd(fd);
});

t.test('agent SIGKILL and restart: pins adopted, one copy of each program, capture works again', async (t) => {
  const lab = await makeCaptureLab(t);
  await startPodBApps(t, lab);
  const child = fileURLToPath(new URL('./agent-child.ts', import.meta.url));
  const pod = { uid: 'ns1/pod-a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] };
  const startAgent = (tag: string) =>
    new Promise<{ proc: ReturnType<typeof spawn>; programs: Record<string, number> }>((resolve, reject) => {
      const proc = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath, pod, tag })], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      t.teardown(() => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      });
      let out = '';
      const timer = setTimeout(() => reject(new Error(`agent ${tag} not ready`)), 20_000);
      proc.stdout?.on('data', (d) => {
        out += d;
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) {
          clearTimeout(timer);
          resolve({ proc, programs: JSON.parse(line).programs });
        }
      });
      proc.once('exit', (code) => reject(new Error(`agent ${tag} exited ${code}`)));
    });

  // Pod A's app, for inbound from pod C.
  await serveFd(t, await native.openListener(lab.path.a, '::', 7070, 16), 'a-app');
  t.equal(await fetchLine(lab.path.c, lab.ip.a, 7070), 'a-app', 'before any agent, inbound reaches the app');

  const first = await startAgent('agent-1');
  t.equal(await fetchLine(lab.path.a, lab.ip.b, 8080), `agent-1 ${lab.ip.b}:8080`, 'first agent captures outbound');
  t.equal(await fetchLine(lab.path.c, lab.ip.a, 7070), `agent-1-inbound ::ffff:${lab.ip.a}:7070`, 'and inbound');
  first.proc.kill('SIGKILL');
  await new Promise((r) => first.proc.once('exit', r));
  await t.rejects(fetchLine(lab.path.a, lab.ip.b, 8080), { code: 'ECONNREFUSED' }, 'outbound capture stays in place while the agent is down');
  await t.rejects(fetchLine(lab.path.c, lab.ip.a, 7070), { code: 'ECONNREFUSED' }, 'inbound is refused, not handed to the app, while the agent is down');

  const second = await startAgent('agent-2');
  t.equal(await fetchLine(lab.path.a, lab.ip.b, 8080), `agent-2 ${lab.ip.b}:8080`, 'restarted agent captures outbound again');
  t.equal(await fetchLine(lab.path.c, lab.ip.a, 7070), `agent-2-inbound ::ffff:${lab.ip.a}:7070`, 'and inbound');
  const attached = cgroupPrograms(lab.cgroupPath);
  const byType = (type: string) => attached.filter((p) => p.attach_type === type).map((p) => p.id);
  t.same(byType('cgroup_inet4_connect'), [second.programs.skein_connect4], 'one connect4, the new one');
  t.same(byType('cgroup_inet6_connect'), [second.programs.skein_connect6], 'one connect6, the new one');
  t.same(byType('cgroup_sock_ops'), [second.programs.skein_sock_ops], 'one sock_ops, the new one');
  const progs = JSON.parse(sh('bpftool', ['-j', 'prog', 'show'])) as Array<{ id: number }>;
  const live = new Set(progs.map((p) => p.id));
  for (const [name, id] of Object.entries(first.programs)) t.notOk(live.has(id), `old ${name} (id ${id}) is gone from bpftool prog`);
  const skLookupLinks = netnsLinks(statSync(lab.path.a, { bigint: true }).ino);
  t.equal(skLookupLinks.length, 1, 'one sk_lookup link in the pod netns');
  t.equal((skLookupLinks[0] as { prog_id: number }).prog_id, second.programs.skein_sk_lookup, 'running the new program');

  second.proc.kill('SIGKILL');
  await new Promise((r) => second.proc.once('exit', r));
  const cleaner = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
  await cleaner.start();
  await cleaner.uninstall();
  t.same(cgroupPrograms(lab.cgroupPath), [], 'uninstall detaches everything');
  t.same(netnsLinks(statSync(lab.path.a, { bigint: true }).ino), [], 'and the pod netns link');
});

t.test('default attach point: the cgroup v2 root (as in production) captures a process in any cgroup', async (t) => {
  const lab = await makeCaptureLab(t, { joinCgroup: false });
  await startPodBApps(t, lab);
  const capture = new CaptureManager({ pinRoot: lab.pinRoot });
  t.teardown(() => capture.uninstall());
  await capture.start();
  t.equal(capture.attachedCgroup, cgroup2Root(), 'attached at the detected cgroup2 root');
  const a = await servePod(t, capture, await capture.enroll({ uid: 'ns1/pod-a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] }), 'a');
  t.equal(await fetchLine(lab.path.a, lab.ip.vip, 80), 'a-15001', 'captured from outside the test cgroup');
  t.same(a.originals.at(-1), { address: lab.ip.vip, port: 80, family: 4 });
  const ours = new Set(Object.values(capture.programIds()));
  t.equal(cgroupPrograms(cgroup2Root()).filter((p) => ours.has(p.id)).length, 3, 'connect4, connect6, sock_ops at the root');
  await capture.release('ns1/pod-a');
  await a.close();
  await capture.uninstall();
  t.equal(cgroupPrograms(cgroup2Root()).filter((p) => ours.has(p.id)).length, 0, 'nothing of ours left at the root');
});

t.test('startup checks: stale pins from another layout, bpffs missing', async (t) => {
  const lab = await makeCaptureLab(t, { joinCgroup: false });
  const first = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
  await first.start();
  await first.close();
  const stampFd = native.objGet(`${lab.pinRoot}/maps/${MAP.stamp}`);
  native.mapUpdate(stampFd, u32Key(0), encodeStamp(99));
  native.closeFd(stampFd);
  await t.rejects(new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath }).start(), { code: 'SKEIN_CAPTURE_STALE_PINS' });
  const replacing = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath, replaceStalePins: true });
  await replacing.start();
  t.equal(cgroupPrograms(lab.cgroupPath).length, 3, 'stale pins replaced: three programs attached, not six');
  await replacing.uninstall();
  t.same(cgroupPrograms(lab.cgroupPath), [], 'uninstalled');

  await t.rejects(
    new CaptureManager({ pinRoot: `/tmp/skein-not-bpffs-${lab.id}`, cgroupPath: lab.cgroupPath }).start(),
    { code: 'SKEIN_CAPTURE_BPFFS_MISSING' },
  );
  await t.rejects(new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: `${lab.cgroupPath}-missing` }).start(), {
    code: 'SKEIN_CAPTURE_CGROUP2_MISSING',
  });
  await t.rejects(native.netnsCookie('/nonexistent/netns'), { code: 'ENOENT', errno: -2, syscall: 'open' }, 'native errors carry code/errno/syscall');
});

/** A pod's records in skein_orig_peer now (the node-wide map every pod shares). */
function recordsOf(lab: CaptureLab, netnsCookie: bigint): number {
  const fd = native.objGet(`${lab.pinRoot}/maps/${MAP.originalByPeer}`);
  try {
    let n = 0;
    let key = native.mapNextKey(fd, null);
    for (let i = 0; key && i < 200_000; i++) {
      if (key.readBigUInt64LE(0) === netnsCookie) n++;
      key = native.mapNextKey(fd, key);
    }
    return n;
  } finally {
    native.closeFd(fd);
  }
}

/** A connection from inside a netns, as an app there makes it (unmarked): resolves once connected, or with the errno. */
async function appConnect(nsPath: string, host: string, port: number): Promise<net.Socket | string> {
  const s = new net.Socket({ fd: await native.openSocket(nsPath, 4, 0) });
  return new Promise((resolve) => {
    s.once('connect', () => resolve(s));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.connect(port, host);
  });
}

t.test("one pod's share of the original-destination records: over it connects are refused, closed sockets leave nothing, another pod's record survives", async (t) => {
  const lab = await makeCaptureLab(t);
  const share = 40;
  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath, podShare: share });
  t.teardown(() => capture.uninstall());
  await capture.start();
  const podA = await capture.enroll({ uid: 'ns1/pod-a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] });
  const podC = await capture.enroll({ uid: 'ns1/pod-c', netnsPath: lab.path.c, ips: [lab.ip.c], excludeOutboundPorts: [], excludeInboundPorts: [] });
  // Neither listener reads the original destination at accept (as when a listener is over its
  // cap, or the agent is slow): every record stays in the map until read or closed.
  const a = await serveFd(t, podA.listeners.outbound, 'a-15001');
  const victimAccepted: net.Socket[] = [];
  await serveFd(t, podC.listeners.outbound, 'c-15001', (s) => victimAccepted.push(s));

  // The victim: pod C's connection, established, its record not read yet.
  const victim = await appConnect(lab.path.c, lab.ip.vip, 80);
  t.type(victim, net.Socket, 'pod C connected');
  t.teardown(() => (victim as net.Socket).destroy());
  await waitFor(() => victimAccepted.length === 1);

  // Pod A asks for twice its share at once: the share connects, the rest are refused (EPERM).
  const burst = await Promise.all(Array.from({ length: 2 * share }, () => appConnect(lab.path.a, lab.ip.external, 443)));
  const held = burst.filter((x): x is net.Socket => typeof x !== 'string');
  t.equal(held.length, share, `${share} of ${2 * share} connects from pod A captured`);
  t.same([...new Set(burst.filter((x) => typeof x === 'string'))], ['EPERM'], 'the rest refused with EPERM');
  t.equal(capture.counters().podShareRefused, share, 'each refusal counted in the kernel');
  t.ok(recordsOf(lab, podA.netnsCookie) <= share, `pod A holds at most its share of records (${recordsOf(lab, podA.netnsCookie)})`);

  // Pod A churns: every socket closed leaves no record and gives its place back.
  for (const s of held) s.destroy();
  for (const s of a.accepted) s.destroy();
  await waitFor(() => recordsOf(lab, podA.netnsCookie) === 0);
  let churned = 0;
  for (let round = 0; round < 25; round++) {
    const batch = await Promise.all(Array.from({ length: share }, () => appConnect(lab.path.a, lab.ip.external, 443)));
    for (const s of batch) if (typeof s !== 'string') {
      churned++;
      s.destroy();
    }
    for (const s of a.accepted.splice(0)) s.destroy();
    await waitFor(() => recordsOf(lab, podA.netnsCookie) === 0);
  }
  t.equal(churned, 25 * share, `${churned} connects of pod A, each within its share once the previous ones closed`);
  t.equal(capture.counters().podShareRefused, share, 'none of them refused');
  const shareFd = native.objGet(`${lab.pinRoot}/maps/${MAP.podShare}`);
  t.same(native.mapLookup(shareFd, u64Key(podA.netnsCookie))?.readBigUInt64LE(0), 0n, "pod A's count back at 0");
  native.closeFd(shareFd);

  // Pod C's record outlived all of it.
  t.same(capture.originalDestination(victimAccepted[0]!), { address: lab.ip.vip, port: 80, family: 4 }, "pod C's record is still there, exact");
  t.equal(capture.counters().noRecordRefused, 0);
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
