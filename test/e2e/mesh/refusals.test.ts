/**
 * Operator surfaces of refusals in a real lab: a TLS client with a certificate from a foreign
 * CA knocks on a meshed pod's :15008; the pod's agent names the refusal with a stable code in
 * its admin /stats and its :15020/metrics (and the sk_lookup drop counters are exported).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';
import { makeCa, makeLeaf, OTHER_TRUST_DOMAIN, spiffe } from '../../unit/proxy/tunnel/fixtures.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

interface Stats {
  tunnel: { refusals: Record<string, number> };
  capture: { skLookupAssignFailed: number; skLookupNoSocket: number; podShareRefused: number; noRecordRefused: number };
}

t.test('tunnel refusals are named and counted by the agent', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!; // node-b
  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
  const nodeB = rec.plan.nodes.find((n) => n.name === 'node-b')!;
  const dir = mkdtempSync(join(tmpdir(), 'skein-e2e-foreign-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const foreign = await makeLeaf(await makeCa(OTHER_TRUST_DOMAIN), [spiffe('shop', 'client', OTHER_TRUST_DOMAIN)]);
  writeFileSync(join(dir, 'cert.pem'), foreign.certChainPem);
  writeFileSync(join(dir, 'key.pem'), foreign.privateKeyPem);

  await waitUntil(async () => {
    const w = await agentGet<{ pods: { pod: string; state: string }[] }>(rec, 'node-b', '/workloads');
    return w.pods.some((p) => p.pod === 'shop/echo-1' && p.state === 'serving');
  }, 30_000);
  const before = (await agentGet<Stats>(rec, 'node-b', '/stats')).tunnel.refusals.SKEIN_TUNNEL_TLS_UNKNOWN_CA ?? 0;

  // From node-a's netns (not a meshed pod), as a foreign workload would; bounded in time.
  const script = `
    const tls = await import('node:tls');
    const { readFileSync } = await import('node:fs');
    const s = tls.connect({ host: ${JSON.stringify(echo1.ip)}, port: 15008, ALPNProtocols: ['h2'], rejectUnauthorized: false,
      cert: readFileSync(${JSON.stringify(join(dir, 'cert.pem'))}), key: readFileSync(${JSON.stringify(join(dir, 'key.pem'))}) });
    s.on('error', (e) => { console.log('ERROR', e.code ?? e.message); process.exit(0); });
    s.on('close', () => { console.log('CLOSED'); process.exit(0); });
    s.on('secureConnect', () => s.write('PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'));
    setTimeout(() => { console.log('TIMEOUT'); process.exit(0); }, 5000);`;
  const { stdout } = await exec('ip', ['netns', 'exec', nodeA.netns, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
  t.match(stdout, /ERROR|CLOSED/, `the handshake was refused (${stdout.trim()})`);

  await waitUntil(async () => ((await agentGet<Stats>(rec, 'node-b', '/stats')).tunnel.refusals.SKEIN_TUNNEL_TLS_UNKNOWN_CA ?? 0) > before, 5_000);
  const stats = await agentGet<Stats>(rec, 'node-b', '/stats');
  t.equal(stats.tunnel.refusals.SKEIN_TUNNEL_TLS_UNKNOWN_CA, before + 1, 'admin /stats counts it under its code');
  t.same(stats.capture, { skLookupAssignFailed: 0, skLookupNoSocket: 0, podShareRefused: 0, noRecordRefused: 0 }, 'admin /stats shows the kernel\'s drop and refusal counters');

  const metrics = (await exec('ip', ['netns', 'exec', nodeB.netns, 'curl', '-sf', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, new RegExp(`skein_tunnel_refusals_total\\{code="SKEIN_TUNNEL_TLS_UNKNOWN_CA"\\} ${before + 1}\\b`), ':15020/metrics counts it by code');
  t.match(metrics, /skein_capture_inbound_dropped_total\{reason="sk_assign_failed"\} 0\b/, 'and exports the sk_assign drop counter');
});
