/**
 * AuthorizationPolicy enforced at the destination, in the lab: Istio-shaped policies are put
 * into the folder the lab's controller watches (as an operator would apply them), streamed to
 * the agents, compiled per pod and evaluated per request (L7) and per connection (L4), across
 * nodes and on one node. Removing a policy lifts it.
 */
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { LabRecord } from '../../../src/lab/registry.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const from = 'shop/client-0'; // node-a

/** Writes policies as a YAML file in the controller's folder (JSON is YAML). */
function apply(rec: LabRecord, file: string, objects: object[]): void {
  const path = join(rec.stateDir, file);
  writeFileSync(`${path}.tmp`, objects.map((o) => JSON.stringify(o)).join('\n---\n'));
  // rename: the controller never reads a half-written file
  renameSync(`${path}.tmp`, path);
}

function policy(name: string, spec: object, annotations?: Record<string, string>): object {
  return {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: 'shop', ...(annotations ? { annotations } : {}) },
    spec,
  };
}

/** Waits until both agents serve exactly these policies. */
async function served(rec: LabRecord, names: string[]): Promise<void> {
  const want = [...names].sort().join(',');
  await waitUntil(async () => {
    for (const node of ['node-a', 'node-b']) {
      const d = await agentGet<{ snapshot: { authorizationPolicies?: { name: string }[] } | null }>(rec, node, '/config_dump');
      const have = (d.snapshot?.authorizationPolicies ?? []).map((p) => p.name).sort().join(',');
      if (have !== want) return false;
    }
    return true;
  }, 15_000);
}

t.test('AuthorizationPolicy in the lab', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const pod = (name: string) => rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === name)!;
  const targets = [
    ['across nodes', pod('echo-1').ip],
    ['same node', pod('echo-0').ip],
  ] as const;
  const run = (args: string[]) => client(rec, from, [...args, '--count', '3', '--timeout', '5']);

  await t.test('L7 DENY by path, method and header; gRPC gets PERMISSION_DENIED', async (t) => {
    apply(rec, 'zz-authz.yaml', [
      policy('deny-admin', {
        selector: { matchLabels: { app: 'echo' } },
        action: 'DENY',
        rules: [
          { to: [{ operation: { paths: ['/admin*'] } }] },
          { to: [{ operation: { methods: ['DELETE'] } }] },
          { when: [{ key: 'request.headers[x-debug]', values: ['on'] }] },
          { to: [{ operation: { paths: ['/skein.lab.v1.Echo/Unary'] } }] },
        ],
      }),
    ]);
    await served(rec, ['deny-admin']);
    for (const [where, ip] of targets) {
      const admin = await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/admin/users']);
      t.same(admin.errors, { HTTP_403: 3 }, `${where}: GET /admin/users denied (403)`);
      const h2admin = await run(['--protocol', 'h2c', '--target', `${ip}:8080`, '--path', '/admin']);
      t.same(h2admin.errors, { HTTP_403: 3 }, `${where}: h2c /admin denied (403)`);
      const ok = await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/public']);
      t.equal(ok.ok, 3, `${where}: GET /public still served ${JSON.stringify(ok.errors)}`);
      const grpc = await run(['--protocol', 'grpc', '--target', `${ip}:9090`, '--grpc-call', 'unary']);
      t.same(grpc.errors, { GRPC_7: 3 }, `${where}: gRPC Echo/Unary gets PERMISSION_DENIED`);
      const stream = await run(['--protocol', 'grpc', '--target', `${ip}:9090`, '--grpc-call', 'server-stream']);
      t.equal(stream.ok, 3, `${where}: another gRPC method still served ${JSON.stringify(stream.errors)}`);
    }
    // Method and header rules, with curl as the client.
    const { labExecCaptured } = await import('../../../src/lab/lab.js');
    const ip = pod('echo-1').ip;
    const code = async (args: string[]) =>
      (await labExecCaptured(rec, from, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...args])).stdout.trim();
    t.equal(await code(['-X', 'DELETE', `http://${ip}:8080/x`]), '403', 'DELETE denied');
    t.equal(await code(['-H', 'x-debug: on', `http://${ip}:8080/x`]), '403', 'x-debug: on denied');
    t.equal(await code(['-H', 'x-debug: off', `http://${ip}:8080/x`]), '200', 'x-debug: off served');
    const stats = await agentGet<{ authorization: { decisions: Record<string, number> }; inbound: { http: { denied: number } } }>(rec, 'node-b', '/stats');
    t.ok((stats.authorization.decisions['deny|shop/deny-admin'] ?? 0) >= 9, `node-b counted its denials by policy ${JSON.stringify(stats.authorization.decisions)}`);
  });

  await t.test('L4 DENY by namespace on a TCP port; an L7 rule on a TCP port denies it (fail safe)', async (t) => {
    apply(rec, 'zz-authz.yaml', [
      policy('deny-shop-tcp', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ from: [{ source: { namespaces: ['shop'] } }], to: [{ operation: { ports: ['7070'] } }] }] }),
    ]);
    await served(rec, ['deny-shop-tcp']);
    for (const [where, ip] of targets) {
      const tcp = await run(['--protocol', 'tcp', '--target', `${ip}:7070`]);
      t.equal(tcp.ok, 0, `${where}: TCP from namespace shop refused ${JSON.stringify(tcp.errors)}`);
      const http = await run(['--protocol', 'http1', '--target', `${ip}:8080`]);
      t.equal(http.ok, 3, `${where}: HTTP on 8080 untouched`);
    }
    apply(rec, 'zz-authz.yaml', [
      policy('deny-post-tcp', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { ports: ['7070'], methods: ['POST'] } }] }] }),
    ]);
    await served(rec, ['deny-post-tcp']);
    const tcp = await run(['--protocol', 'tcp', '--target', `${pod('echo-1').ip}:7070`]);
    t.equal(tcp.ok, 0, 'a DENY with an HTTP field on a TCP port denies the port (it cannot be checked)');
  });

  await t.test('an ALLOW-only allow-list: only what it names is served; removing it lifts it', async (t) => {
    apply(rec, 'zz-authz.yaml', [
      policy('allow-list', {
        selector: { matchLabels: { app: 'echo' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }], to: [{ operation: { paths: ['/allowed*'], ports: ['8080'] } }] }],
      }),
    ]);
    await served(rec, ['allow-list']);
    for (const [where, ip] of targets) {
      t.equal((await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/allowed/1'])).ok, 3, `${where}: /allowed/1 served`);
      t.same((await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/other'])).errors, { HTTP_403: 3 }, `${where}: /other denied`);
      t.equal((await run(['--protocol', 'tcp', '--target', `${ip}:7070`])).ok, 0, `${where}: TCP 7070 denied (not on the list)`);
    }
    const legacy = await client(rec, 'legacy/client-0', ['--protocol', 'http1', '--target', `${pod('echo-1').ip}:8080`, '--path', '/allowed', '--count', '2', '--timeout', '5']);
    t.equal(legacy.ok, 0, 'a client outside the mesh is not on the list');
    rmSync(join(rec.stateDir, 'zz-authz.yaml'));
    await served(rec, []);
    for (const [where, ip] of targets) {
      t.equal((await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/other'])).ok, 3, `${where}: policy removed, /other served again`);
    }
  });

  await t.test('AUDIT and dry run never change a decision; they are logged', async (t) => {
    apply(rec, 'zz-authz.yaml', [
      policy('audit-all', { selector: { matchLabels: { app: 'echo' } }, action: 'AUDIT', rules: [{}] }),
      policy('would-deny', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{}] }, { 'skein.io/dry-run': 'true' }),
    ]);
    await served(rec, ['audit-all', 'would-deny']);
    const r = await run(['--protocol', 'http1', '--target', `${pod('echo-1').ip}:8080`, '--path', '/audited']);
    t.equal(r.ok, 3, 'served');
    const stats = await agentGet<{ authorization: { audits: Record<string, number> } }>(rec, 'node-b', '/stats');
    t.ok((stats.authorization.audits['shop/audit-all'] ?? 0) >= 3 && (stats.authorization.audits['shop/would-deny'] ?? 0) >= 3, `audits counted ${JSON.stringify(stats.authorization.audits)}`);
    rmSync(join(rec.stateDir, 'zz-authz.yaml'));
    await served(rec, []);
  });
});
