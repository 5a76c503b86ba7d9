/**
 * Root rotation in the lab, under load: `skein ca rotate` runs end to end (add the new root,
 * wait until both agents trust it, switch signing, re-issue, retire the old root) while a
 * client on node-a sends bounded HTTP/1 traffic to an echo pod on node-b, over the mTLS
 * tunnel, both on a kept-alive connection and on a new connection per request. Then: no
 * request failed, both agents' certificates chain to the new root only, the old root is in no
 * bundle (agents, the published roots file, the CA), and a peer with a certificate from the
 * old root is refused at the tunnel while one from the new root is accepted.
 *
 * Before that, the interruptions an operator meets: an agent that cannot answer (SIGSTOPped)
 * makes the first run time out with a stable code and stop in a safe state (both roots
 * trusted, the old one still signing); the controller is then killed and restarted, and the
 * run under load continues that same rotation from its saved phase.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import type { CaStatus } from '../../../src/api/config-wire.js';
import { SigningAuthority } from '../../../src/identity/ca/authority.js';
import type { PersistedCaState } from '../../../src/identity/ca/root-store.js';
import { generateP256KeyPair, privateKeyToPem } from '../../../src/identity/x509/keys.js';
import { subtle } from '../../../src/identity/x509/provider.js';
import { pemBlocks } from '../../../src/identity/x509/pem.js';
import { meshPaths, startControlPlane } from '../../../src/lab/mesh.js';
import { type LabRecord, writeRecord } from '../../../src/lab/registry.js';
import { skeinCommand } from '../../../src/paths.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

async function skein(rec: LabRecord, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...pre] = skeinCommand();
  try {
    const r = await exec(cmd!, [...pre, ...args, '--lab', rec.id], { encoding: 'utf8', timeout: timeoutMs });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function caStatus(rec: LabRecord): Promise<CaStatus> {
  const r = await skein(rec, ['ca', 'status', '--json'], 30_000);
  if (r.code !== 0) throw new Error(`skein ca status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as CaStatus;
}

/** A leaf for `spiffeId` signed by `authority`, written as cert.pem/key.pem under `dir`. */
async function leafFiles(authority: SigningAuthority, spiffeId: string, dir: string): Promise<{ cert: string; key: string }> {
  const keys = await generateP256KeyPair();
  const spki = await subtle.exportKey('spki', keys.publicKey);
  const leaf = await authority.signLeaf({ publicKeySpki: spki, uriSans: [spiffeId], ttlSeconds: 600, backdateSeconds: 60, now: new Date() });
  const cert = join(dir, `${authority.id.slice(0, 2)}-${Math.random().toString(36).slice(2)}.cert.pem`);
  const key = `${cert}.key`;
  writeFileSync(cert, [leaf, ...authority.chainPem.slice(0, -1)].join(''));
  writeFileSync(key, await privateKeyToPem(keys.privateKey), { mode: 0o600 });
  return { cert, key };
}

/** From `netns`, a TLS + HTTP/2 handshake with a pod's :15008 with the given client certificate. */
async function tunnelHandshake(netns: string, ip: string, files: { cert: string; key: string }): Promise<string> {
  // The server's certificate is not checked here: this probes what the SERVER accepts.
  // TLS 1.3: the client's handshake ends before the server judged its certificate; the
  // server's SETTINGS frame is the proof it accepted the session.
  const script = `
    const http2 = await import('node:http2');
    const tls = await import('node:tls');
    const { readFileSync } = await import('node:fs');
    const s = http2.connect('https://${ip}:15008', { createConnection: () => tls.connect({ host: ${JSON.stringify(ip)}, port: 15008, ALPNProtocols: ['h2'], rejectUnauthorized: false,
      cert: readFileSync(${JSON.stringify(files.cert)}), key: readFileSync(${JSON.stringify(files.key)}) }) });
    s.on('remoteSettings', () => { console.log('ACCEPTED'); process.exit(0); });
    s.on('error', (e) => { console.log('REFUSED', e.code ?? e.message); process.exit(0); });
    s.on('close', () => { console.log('REFUSED closed'); process.exit(0); });
    setTimeout(() => { console.log('TIMEOUT'); process.exit(0); }, 5000);`;
  const { stdout } = await exec('ip', ['netns', 'exec', netns, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
  return stdout.trim();
}

t.test('skein ca rotate under cross-node load: zero failed requests', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const paths = meshPaths(rec);
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!;
  const client0 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'client-0')!;
  t.not(echo1.node, client0.node, `cross-node: ${client0.node} -> ${echo1.node}`);
  const nodeA = rec.plan.nodes.find((n) => n.name === client0.node)!;
  const dir = mkdtempSync(join(tmpdir(), 'skein-e2e-carotate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // Both agents connected, serving, and reporting certificates of the first root.
  const first = JSON.parse(readFileSync(join(paths.caDir, 'root.json'), 'utf8')) as PersistedCaState;
  const oldId = first.activeId;
  await waitUntil(async () => {
    const st = await caStatus(rec);
    return st.agents.length === 2 && st.agents.every((a) => a.certificates.length > 0 && a.certificates.every((c) => c.root === oldId));
  }, 30_000, 500);
  const before = await caStatus(rec);
  t.same(before.authorities.map((a) => a.id), [oldId], 'one root before the rotation');
  t.ok(before.rotatable, 'the lab CA is rotatable');

  // 1) An agent that does not answer: the run times out, stops in a safe state, says why.
  const agentB = rec.processes.find((p) => p.kind === 'agent' && p.name === 'node-b')!;
  process.kill(agentB.pid, 'SIGSTOP');
  let stuck: Awaited<ReturnType<typeof skein>>;
  try {
    stuck = await skein(rec, ['ca', 'rotate', '--timeout', '5s'], 60_000);
  } finally {
    process.kill(agentB.pid, 'SIGCONT');
  }
  t.comment(`interrupted run: ${stuck.stdout.trim().split('\n').join(' | ')} || ${stuck.stderr.trim()}`);
  t.equal(stuck.code, 1, 'a rotation whose agents do not converge exits 1');
  t.match(stuck.stderr, /SKEIN_CONTROLLER_CA_ROTATION_TIMEOUT: agents did not trust the new root within 5 s: node-b/, 'with the stable code and the agent that did not answer');
  t.match(stuck.stderr, /safe state/, 'and says it stopped in a safe state');
  const mid = await caStatus(rec);
  const newId = mid.rotation?.to ?? '';
  t.equal(mid.rotation?.phase, 'trusting', 'the rotation waits in phase trusting');
  t.same(
    mid.authorities.map((a) => [a.id, a.active]),
    [
      [oldId, true],
      [newId, false],
    ],
    'safe state: both roots in the bundle, the old one still signs',
  );
  t.ok(mid.agents.find((a) => a.node === 'node-a')?.trusted_roots.includes(newId), 'node-a already trusts the new root');

  // 2) The controller dies mid-rotation and comes back: the phase was saved with the roots.
  const ctl = rec.processes.find((p) => p.kind === 'controller')!;
  process.kill(ctl.pid, 'SIGKILL');
  const back = await startControlPlane(rec, { restart: true });
  rec.processes = rec.processes.filter((p) => p !== ctl).concat(back);
  writeRecord(rec);
  await waitUntil(async () => {
    const st = await caStatus(rec).catch(() => undefined);
    return st?.agents.length === 2 && st.agents.every((a) => a.reported_at !== '');
  }, 30_000, 500);
  const restarted = await caStatus(rec);
  t.same([restarted.rotation?.phase, restarted.rotation?.to, restarted.authorities.length], ['trusting', newId, 2], 'the restarted controller resumes the same rotation');

  // 3) Re-run under load: it continues that rotation to the end.
  // Warm the path once (first request pays for certificates and the tunnel).
  const warm = await client(rec, 'shop/client-0', ['--target', `${echo1.ip}:8080`, '--count', '3']);
  t.equal(warm.failed, 0, 'warm-up request answered');

  // Steady load, bounded in count and time: 100 req/s kept-alive + 50 req/s new connections.
  const loadSeconds = 30;
  const loadStart = Date.now();
  const keepAlive = client(rec, 'shop/client-0', ['--target', `${echo1.ip}:8080`, '--rate', '100', '--count', String(100 * loadSeconds), '--duration', String(loadSeconds + 5)], 90_000);
  const newConns = client(
    rec,
    'shop/client-0',
    ['--target', `${echo1.ip}:8080`, '--new-connection', '--rate', '50', '--count', String(50 * loadSeconds), '--duration', String(loadSeconds + 5)],
    90_000,
  );
  await new Promise((r) => setTimeout(r, 3000));

  const rotateStart = Date.now();
  const rotation = await skein(rec, ['ca', 'rotate', '--json', '--timeout', '60s'], 180_000);
  const rotateMs = Date.now() - rotateStart;
  const [ka, nc] = await Promise.all([keepAlive, newConns]);
  const loadEnd = Date.now();
  const summary = JSON.parse(rotation.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; from: string; to: string; totalMs: number; steps: { step: string; ms: number }[] };

  t.comment(`rotation: ${rotateMs} ms (${summary.steps?.map((s) => `${s.step} ${s.ms} ms`).join(', ')})`);
  t.comment(`keep-alive: ${ka.requests} requests, ${ka.ok} ok, ${ka.failed} failed, p99 ${ka.latencyMs.p99} ms; errors ${JSON.stringify(ka.errors)}`);
  t.comment(`new connections: ${nc.requests} requests, ${nc.ok} ok, ${nc.failed} failed, p99 ${nc.latencyMs.p99} ms; errors ${JSON.stringify(nc.errors)}`);
  t.comment(`load ran ${loadEnd - loadStart} ms; rotation from +${rotateStart - loadStart} ms to +${rotateStart - loadStart + rotateMs} ms`);

  t.equal(rotation.code, 0, `skein ca rotate exits 0 ${rotation.stderr.trim()}`);
  t.ok(summary.ok, 'the summary says ok');
  t.same(summary.steps?.map((s) => s.step), ['add', 'activate', 'reissue', 'retire', 'finish'], 'every step reached, in order');
  t.equal(summary.from, oldId, 'it retired the root that signed before');
  t.equal(summary.to, newId, 'to the new root added by the interrupted run (continued, not restarted)');
  t.ok(rotateStart + rotateMs < loadEnd, 'the whole rotation ran while the load was running');
  t.equal(ka.failed, 0, 'kept-alive connection: 0 failed requests');
  t.equal(nc.failed, 0, 'new connection per request: 0 failed requests');
  t.ok(ka.ok >= 100 * loadSeconds * 0.9, `kept-alive: ${ka.ok} answered`);
  t.ok(nc.ok >= 50 * loadSeconds * 0.9, `new connections: ${nc.ok} answered`);

  const after = await caStatus(rec);
  t.same(after.authorities.map((a) => [a.id, a.active]), [[summary.to, true]], 'the CA holds and signs with the new root only');
  t.equal(after.rotation?.phase, 'done', 'the rotation is recorded as done');
  for (const a of after.agents) {
    t.same(a.trusted_roots, [summary.to], `${a.node} trusts the new root only`);
    t.ok(a.certificates.length > 0 && a.certificates.every((c) => c.root === summary.to), `${a.node}: ${a.certificates.length} certificate(s), all on the new root`);
  }
  // Agents' own view (admin API), not only what they reported.
  const newRoot = new X509Certificate(after.bundle_pem[0]!);
  for (const node of ['node-a', 'node-b']) {
    const certs = (await agentGet<{ certificates: { identity: string; certChainPem?: string }[] }>(rec, node, '/certs')).certificates;
    for (const c of certs) {
      const last = new X509Certificate(pemBlocks(c.certChainPem ?? '').at(-1)!);
      t.ok(last.verify(newRoot.publicKey), `${node} ${c.identity} verifies against the new root`);
    }
  }
  const published = pemBlocks(readFileSync(paths.rootsPem, 'utf8'));
  t.equal(published.length, 1, 'the published roots file holds one root');
  const stored = JSON.parse(readFileSync(join(paths.caDir, 'root.json'), 'utf8')) as PersistedCaState;
  t.same([stored.activeId, stored.authorities.length, stored.rotation?.phase], [summary.to, 1, 'done'], 'the CA state file: new root only, rotation done');

  // A peer with a certificate of the old root is refused; one of the new root is accepted.
  const oldAuthority = await SigningAuthority.fromMaterial(first.authorities[0]!);
  const newAuthority = await SigningAuthority.fromMaterial(stored.authorities[0]!);
  t.equal(oldAuthority.id, oldId, 'the old root material is the retired root');
  const id = `spiffe://${rec.plan.trustDomain}/ns/shop/sa/client`;
  const oldVerdict = await tunnelHandshake(nodeA.netns, echo1.ip, await leafFiles(oldAuthority, id, dir));
  const newVerdict = await tunnelHandshake(nodeA.netns, echo1.ip, await leafFiles(newAuthority, id, dir));
  t.match(oldVerdict, /^REFUSED/, `old-root peer refused (${oldVerdict})`);
  t.equal(newVerdict, 'ACCEPTED', 'new-root peer accepted (the probe can tell the two apart)');

  // Re-running is safe: a finished rotation is not redone by a dry run.
  const dry = await skein(rec, ['ca', 'rotate', '--dry-run', '--json'], 30_000);
  t.equal(dry.code, 0, 'dry run exits 0');
  t.match(dry.stdout, /"phase":""/, 'dry run: no rotation under way');
  t.same((await caStatus(rec)).authorities.map((a) => a.id), [summary.to], 'the dry run changed nothing');
});
