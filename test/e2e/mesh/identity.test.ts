/**
 * Identity in the lab: each node's agent holds certificates for exactly the identities of
 * its local meshed pods, the CA refuses identities a node does not run, and short-lived
 * certificates rotate repeatedly under traffic without a failed request.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { CA_PORT, meshPaths } from '../../../src/lab/mesh.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';
import { agentGet } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

interface CertStatus {
  identity: string;
  state: string;
  serialNumber?: string;
}

t.test('identity in the lab', opts(), async (t) => {
  // A 6 s TTL: renewal at half-life means several rotations within the test.
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--cert-ttl', '6'] });
  const certsOf = async (node: string) => (await agentGet<{ certificates: CertStatus[] }>(rec, node, '/certs')).certificates;

  await t.test('each agent holds exactly its local identities', async (t) => {
    const want: Record<string, string[]> = { 'node-a': [], 'node-b': [] };
    for (const p of rec.plan.pods) {
      if (p.namespace !== 'shop') continue; // the only meshed namespace of the demo
      const id = `spiffe://cluster.local/ns/${p.namespace}/sa/${p.serviceAccount}`;
      if (!want[p.node]!.includes(id)) want[p.node]!.push(id);
    }
    for (const node of ['node-a', 'node-b']) {
      const got = (await certsOf(node)).map((c) => c.identity).sort();
      t.same(got, want[node]!.sort(), `${node}: ${got.join(', ')}`);
    }
  });

  await t.test('the CA refuses an identity with no pod on the asking node', async (t) => {
    // shop/client runs on node-a only: node-b's credential must not obtain it.
    const paths = meshPaths(rec);
    const script = `
      const id = await import(${JSON.stringify(join(repo, 'dist/identity/index.js'))});
      const { readFileSync } = await import('node:fs');
      const roots = readFileSync(${JSON.stringify(paths.rootsPem)}, 'utf8').match(/-----BEGIN CERTIFICATE-----[\\s\\S]+?-----END CERTIFICATE-----/g);
      const c = new id.CaClient({ address: '${rec.plan.underlayGateway}:${CA_PORT}', rootsPem: roots, token: readFileSync(${JSON.stringify(join(paths.tokensDir, 'node-b'))}, 'utf8').trim() });
      const keys = await import(${JSON.stringify(join(repo, 'dist/identity/x509/keys.js'))});
      const csrPem = await keys.createWorkloadCsr('spiffe://cluster.local/ns/shop/sa/client', await keys.generateP256KeyPair());
      try { await c.issue({ csrPem, ttlSeconds: 60 }); console.log('ISSUED'); } catch (e) { console.log('REFUSED', e.code, e.message); }
      c.close();`;
    const node = rec.plan.nodes.find((n) => n.name === 'node-b')!;
    const { stdout } = await exec('ip', ['netns', 'exec', node.netns, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    t.match(stdout, /^REFUSED/, `refused: ${stdout.trim()}`);
    t.match(stdout, /PERMISSION_DENIED|SKEIN_IDENTITY|not run|no pod/i, 'with the node-authorization reason');
  });

  await t.test('certificates rotate repeatedly while traffic flows, zero failures', async (t) => {
    const serials = async () => new Set((await certsOf('node-b')).map((c) => c.serialNumber));
    const first = await serials();
    const load = client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--rate', '25', '--count', '375', '--duration', '16']);
    const seen = new Set(first);
    for (let i = 0; i < 15; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      for (const s of await serials()) seen.add(s);
    }
    const r = await load;
    t.ok(seen.size - first.size >= 3, `${seen.size - first.size} new certificates on node-b during the run`);
    t.equal(r.failed, 0, `no failed request across rotations ${JSON.stringify(r.errors)}`);
    t.ok(r.ok >= 300, `${r.ok} requests answered`);
  });
});
