/**
 * HTTP semantics end to end through the L7 path between agents (each request one HTTP/2
 * stream from the source agent to the destination agent, which relays it to the app in the
 * app's protocol): across nodes (mTLS tunnel session to the pod's :15008) and on one node
 * (in-agent session), for HTTP/1.1 and h2c clients (gRPC where it applies). The checks run in
 * an enrolled pod (test/e2e/support/l7-semantics-client.ts) against the lab's echo app, whose
 * `/sem/...` routes report what arrived and misbehave on request (trailers, 204/304, slow
 * bodies, holding until cancelled, resetting mid-body). Then, from outside: the destination
 * agent's access log and /stats, a 100 MB body each way, 1000 streams on one connection to
 * the Service, and a capture of the underlay that must hold no plaintext HTTP.
 */
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import type { CheckResult } from '../support/l7-semantics-client.js';
import { isRoot, repo, startLab } from '../support/lab.js';
import { agentGet } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const runner = join(repo, 'test', 'e2e', 'support', 'l7-semantics-client.ts');
const from = 'shop/client-0'; // node-a
const CLIENT_ID = 'spiffe://cluster.local/ns/shop/sa/client';

/** Checks known to fail, by name: the bug they show (a `todo` instead of a failure). None now. */
const KNOWN: Record<string, string> = {};

async function runChecks(rec: LabRecord, args: string[], timeoutMs: number): Promise<CheckResult[]> {
  const r = await labExecCaptured(rec, from, [process.execPath, '--import', 'tsx', runner, ...args], timeoutMs);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return (JSON.parse(line) as { checks: CheckResult[] }).checks;
  } catch {
    throw new Error(`${args[0]}: no summary (exit ${r.code}): ${r.stderr.slice(0, 1000)}`);
  }
}

function assertChecks(t: Test, where: string, checks: CheckResult[]): void {
  for (const c of checks) {
    const todo = KNOWN[c.name];
    t.ok(c.ok, `${where}: ${c.name}${c.ok ? ` (${c.detail})` : `: ${c.detail}`}`, todo ? { todo } : {});
  }
}

interface HttpStats {
  inbound: { http: { requests: { http1: number; http2: number; grpc: number } } };
}

interface AccessLine {
  msg?: string;
  access?: { method?: string; path?: string; status?: number; source?: string; workload?: string };
}

async function accessLines(rec: LabRecord, node: string): Promise<AccessLine[]> {
  const text = await readFile(join(rec.logDir, `agent.${node}.log`), 'utf8');
  const out: AccessLine[] = [];
  for (const l of text.split('\n')) {
    if (!l.includes('inbound request')) continue;
    try {
      out.push(JSON.parse(l) as AccessLine);
    } catch {
      // not a JSON line
    }
  }
  return out.filter((l) => l.msg === 'inbound request');
}

t.test('HTTP semantics through the L7 path between agents', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const pod = (name: string) => rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === name)!;
  const vip = rec.plan.services.find((s) => s.namespace === 'shop' && s.name === 'echo')!.vip;
  const targets = [
    { where: 'across nodes', pod: pod('echo-1'), other: pod('echo-0') },
    { where: 'same node', pod: pod('echo-0'), other: pod('echo-1') },
  ];

  for (const target of targets) {
    await t.test(`${target.where} (${from} -> shop/${target.pod.name} on ${target.pod.node})`, async (t) => {
      const node = target.pod.node;
      const tag = `${target.where.replace(' ', '-')}-${Date.now()}`;
      const before = await agentGet<HttpStats>(rec, node, '/stats');
      const checks = await runChecks(rec, ['semantics', target.pod.ip, '8080', '9090', `shop/${target.pod.name}`, target.other.ip, tag], 300_000);
      t.ok(checks.length >= 40, `${checks.length} checks ran`);
      assertChecks(t, target.where, checks);

      // The destination agent's access log: one line per request, with the source principal.
      const lines = await accessLines(rec, node);
      for (const [check, method] of [
        ['host-h1', 'GET'],
        ['host-h2', 'GET'],
        ['req-trailers-h1', 'POST'],
        ['slow-upload-h2', 'POST'],
      ] as const) {
        const path = `/sem/info?tag=${tag}&check=${check}`;
        const hit = lines.filter((l) => l.access?.path === path);
        t.equal(hit.length, 1, `${target.where}: ${node}'s agent logged "inbound request" once for ${path}`);
        t.match(hit[0]?.access ?? {}, { method, status: 200, source: CLIENT_ID, workload: `shop/${target.pod.name}` }, `${target.where}: ${method} ${check}: method, path, status and source principal logged`);
      }
      // ...and counted each protocol the app was spoken to in.
      const after = await agentGet<HttpStats>(rec, node, '/stats');
      for (const proto of ['http1', 'http2', 'grpc'] as const) {
        const grew = after.inbound.http.requests[proto] - before.inbound.http.requests[proto];
        t.ok(grew > 0, `${target.where}: ${node}'s /stats inbound.http.requests.${proto} grew by ${grew}`);
      }
    });
  }

  await t.test('100 MB up and back across nodes, HTTP/1.1 and h2c, sha256 equal', async (t) => {
    const checks = await runChecks(rec, ['big', pod('echo-1').ip, '8080', String(100_000_000)], 360_000);
    t.equal(checks.length, 2, 'both ran');
    assertChecks(t, 'across nodes', checks);
  });

  await t.test('1000 concurrent h2 streams on one connection to the Service VIP', async (t) => {
    const checks = await runChecks(rec, ['concurrent', vip, '8081', '1000'], 150_000);
    t.equal(checks.length, 2, 'both ran');
    assertChecks(t, `Service ${vip}:8081`, checks);
  });

  await t.test('the underlay carries only TLS on :15008 for a cross-node request', async (t) => {
    const pcap = `/tmp/skein-e2e-l7-${process.pid}-${Date.now()}.pcap`;
    t.teardown(() => exec('rm', ['-f', pcap]));
    const tag = `plainmark${Date.now()}`;
    const cap = spawn('ip', ['netns', 'exec', rec.plan.underlayNetns, 'tshark', '-q', '-i', rec.plan.underlayBridge, '-a', 'duration:8', '-f', 'tcp', '-w', pcap], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1500));
    const checks = await runChecks(rec, ['probe', pod('echo-1').ip, '8080', tag], 30_000);
    assertChecks(t, 'probe', checks);
    await new Promise((r) => cap.once('exit', r));
    const read = (args: string[]) => exec('tshark', ['-r', pcap, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }).then((r) => r.stdout);
    const between = (f: string) => `tcp.len > 0 && !(ip.addr == 172.20.0.1)${f ? ` && ${f}` : ''}`;
    const onTunnel = (await read(['-Y', between('tcp.port == 15008'), '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').filter(Boolean).length;
    t.ok(onTunnel > 0, `${onTunnel} payload packets between the nodes on :15008`);
    const elsewhere = (await read(['-Y', between('!(tcp.port == 15008)'), '-T', 'fields', '-e', 'tcp.srcport', '-e', 'tcp.dstport'])).trim();
    t.equal(elsewhere, '', 'no payload between the nodes on any other port');
    const tls = (await read(['-d', 'tcp.port==15008,tls', '-Y', between('tls'), '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').filter(Boolean).length;
    t.ok(tls > 0, `${tls} packets on :15008 dissect as TLS`);
    t.equal((await read(['-d', 'tcp.port==15008,tls', '-Y', 'http || http2 || grpc'])).trim(), '', 'no plaintext HTTP, HTTP/2 or gRPC on the underlay');
    const bytes = await readFile(pcap);
    t.equal(bytes.indexOf(tag), -1, `the request path (${tag}) is nowhere in the capture`);
    t.equal(bytes.indexOf('skein-dst'), -1, 'the skein-dst field is nowhere in the capture');
    t.equal(bytes.indexOf('/sem/info'), -1, 'the path prefix is nowhere in the capture');
  });
});
