/**
 * AuthorizationPolicy enforced at the destination, in the lab: Istio-shaped policies are put
 * into the folder the lab's controller watches (as an operator would apply them), streamed to
 * the agents, compiled per pod and evaluated per request (L7) and per connection (L4), across
 * nodes and on one node. Removing a policy lifts it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import type { LabRecord } from '../../../src/lab/registry.js';
import { auditLogOf } from '../../../src/lab/mesh.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';
import { labApply, servedBy } from '../support/apply.js';
import { agentGet } from '../support/mesh.js';

const execFileP = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const from = 'shop/client-0'; // node-a

/** The policies in force, replaced as an operator would (lab delete -f, lab apply -f). */
async function apply(rec: LabRecord, objects: object[]): Promise<void> {
  await labApply(rec, objects);
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
function served(rec: LabRecord, names: string[], kind: 'authorizationPolicies' | 'peerAuthentications' = 'authorizationPolicies'): Promise<number> {
  return servedBy(rec, ['node-a', 'node-b'], kind, names);
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
    await apply(rec, [
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
    await apply(rec, [
      policy('deny-shop-tcp', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ from: [{ source: { namespaces: ['shop'] } }], to: [{ operation: { ports: ['7070'] } }] }] }),
    ]);
    await served(rec, ['deny-shop-tcp']);
    for (const [where, ip] of targets) {
      const tcp = await run(['--protocol', 'tcp', '--target', `${ip}:7070`]);
      t.equal(tcp.ok, 0, `${where}: TCP from namespace shop refused ${JSON.stringify(tcp.errors)}`);
      const http = await run(['--protocol', 'http1', '--target', `${ip}:8080`]);
      t.equal(http.ok, 3, `${where}: HTTP on 8080 untouched`);
    }
    await apply(rec, [
      policy('deny-post-tcp', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { ports: ['7070'], methods: ['POST'] } }] }] }),
    ]);
    await served(rec, ['deny-post-tcp']);
    const tcp = await run(['--protocol', 'tcp', '--target', `${pod('echo-1').ip}:7070`]);
    t.equal(tcp.ok, 0, 'a DENY with an HTTP field on a TCP port denies the port (it cannot be checked)');
  });

  await t.test("ipBlocks match the source pod's IP, which the source agent carries (Forwarded on CONNECT, skein-src on requests)", async (t) => {
    const src = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'client-0')!;
    await apply(rec, [
      policy('deny-client-ip', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ from: [{ source: { ipBlocks: [`${src.ip}/32`] } }] }] }),
    ]);
    await served(rec, ['deny-client-ip']);
    for (const [where, ip] of targets) {
      t.same((await run(['--protocol', 'http1', '--target', `${ip}:8080`])).errors, { HTTP_403: 3 }, `${where}: HTTP from ${src.ip} denied`);
      t.equal((await run(['--protocol', 'tcp', '--target', `${ip}:7070`])).ok, 0, `${where}: TCP from ${src.ip} refused`);
    }
    await apply(rec, [
      policy('deny-other-ip', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['192.0.2.0/24'] } }] }] }),
    ]);
    await served(rec, ['deny-other-ip']);
    for (const [where, ip] of targets) {
      t.equal((await run(['--protocol', 'http1', '--target', `${ip}:8080`])).ok, 3, `${where}: another block does not match`);
      t.equal((await run(['--protocol', 'tcp', '--target', `${ip}:7070`])).ok, 3, `${where}: TCP too`);
    }
  });

  await t.test('an ALLOW-only allow-list: only what it names is served; removing it lifts it', async (t) => {
    await apply(rec, [
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
    await apply(rec, []);
    await served(rec, []);
    for (const [where, ip] of targets) {
      t.equal((await run(['--protocol', 'http1', '--target', `${ip}:8080`, '--path', '/other'])).ok, 3, `${where}: policy removed, /other served again`);
    }
  });

  await t.test('AUDIT and dry run never change a decision; they are logged', async (t) => {
    await apply(rec, [
      policy('audit-all', { selector: { matchLabels: { app: 'echo' } }, action: 'AUDIT', rules: [{}] }),
      policy('would-deny', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{}] }, { 'skein.io/dry-run': 'true' }),
    ]);
    await served(rec, ['audit-all', 'would-deny']);
    const r = await run(['--protocol', 'http1', '--target', `${pod('echo-1').ip}:8080`, '--path', '/audited']);
    t.equal(r.ok, 3, 'served');
    const stats = await agentGet<{ authorization: { audits: Record<string, number> } }>(rec, 'node-b', '/stats');
    t.ok((stats.authorization.audits['shop/audit-all'] ?? 0) >= 3 && (stats.authorization.audits['shop/would-deny'] ?? 0) >= 3, `audits counted ${JSON.stringify(stats.authorization.audits)}`);
    await apply(rec, []);
    await served(rec, []);
  });

  await t.test('a policy applied and removed under 200 req/s: no allowed request fails', async (t) => {
    const load = client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--path', '/steady', '--rate', '200', '--count', '1600', '--duration', '8', '--timeout', '5'], 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    await apply(rec, [policy('deny-other', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/other*'] } }] }] })]);
    t.comment(`applied under load: both agents served it ${await served(rec, ['deny-other'])} ms after skein lab apply returned`);
    t.same((await run(['--protocol', 'http1', '--target', `${pod('echo-1').ip}:8080`, '--path', '/other'])).errors, { HTTP_403: 3 }, 'in force under load');
    await apply(rec, []);
    t.comment(`removed under load: both agents dropped it ${await served(rec, [])} ms after skein lab delete returned`);
    const r = await load;
    t.equal(r.failed, 0, `no allowed request failed while the policy came and went ${JSON.stringify(r.errors)}`);
    t.equal(r.ok, 1600, 'every request answered');
  });

  await t.test('PeerAuthentication: namespace PERMISSIVE serves plaintext; a workload STRICT with portLevelMtls opens one port', async (t) => {
    const peer = (name: string, spec: object) => ({ apiVersion: 'security.skein.io/v1alpha1', kind: 'PeerAuthentication', metadata: { name, namespace: 'shop' }, spec });
    const plain = (port: number, protocol: 'http1' | 'tcp') =>
      client(rec, 'legacy/client-0', ['--protocol', protocol, '--target', `${pod('echo-1').ip}:${port}`, '--count', '2', '--new-connection', '--timeout', '3']);
    t.equal((await plain(8080, 'http1')).ok, 0, 'no PeerAuthentication, no annotation: STRICT refuses plaintext');
    await apply(rec, [peer('shop-permissive', { mtls: { mode: 'PERMISSIVE' } })]);
    await served(rec, ['shop-permissive'], 'peerAuthentications');
    t.equal((await plain(8080, 'http1')).ok, 2, 'namespace PERMISSIVE: plaintext served');
    await apply(rec, [
      peer('shop-permissive', { mtls: { mode: 'PERMISSIVE' } }),
      peer('echo-strict', { selector: { matchLabels: { app: 'echo' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' } } }),
    ]);
    await served(rec, ['shop-permissive', 'echo-strict'], 'peerAuthentications');
    t.equal((await plain(8080, 'http1')).ok, 2, 'workload STRICT, port 8080 PERMISSIVE: served');
    t.equal((await plain(7070, 'tcp')).ok, 0, 'workload STRICT on 7070: refused');
    t.equal((await run(['--protocol', 'tcp', '--target', `${pod('echo-1').ip}:7070`])).ok, 3, 'mesh traffic to 7070 unaffected');
    await apply(rec, []);
    await served(rec, [], 'peerAuthentications');
    t.equal((await plain(8080, 'http1')).ok, 0, 'objects removed: STRICT again');
  });

  await t.test('the audit trail: every DENY, AUDIT and dry-run match, hash-chained; skein audit verify names a tampered line', async (t) => {
    const file = auditLogOf(rec, 'node-b');
    const records = readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const denyAdmin = records.find((r) => r.decision === 'deny' && r.policy === 'shop/deny-admin' && r.path === '/admin/users');
    t.match(denyAdmin, { source: 'spiffe://cluster.local/ns/shop/sa/client', workload: 'shop/echo-1', port: 8080, method: 'GET', rule: 0 }, 'a DENY line with who, what and which rule');
    t.ok(records.some((r) => r.decision === 'deny' && r.policy === 'shop/deny-shop-tcp' && r.port === 7070), 'an L4 DENY line');
    t.ok(records.some((r) => r.decision === 'deny' && r.policy === undefined && String(r.reason).includes('allow-list')), 'a denial by an ALLOW list that did not match');
    t.ok(records.some((r) => r.decision === 'audit' && r.policy === 'shop/audit-all'), 'AUDIT lines');
    t.ok(records.some((r) => r.decision === 'dry-run' && r.policy === 'shop/would-deny'), 'dry-run lines');
    const verify = async (f: string) => execFileP(process.execPath, [join(repo, 'bin', 'skein.js'), 'audit', 'verify', f]).then((r) => ({ code: 0, out: r.stdout }), (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }));
    const ok = await verify(file);
    t.equal(ok.code, 0, ok.out.trim());
    const tmp = mkdtempSync(join(tmpdir(), 'skein-audit-e2e-'));
    t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const edited = join(tmp, 'edited.log');
    writeFileSync(edited, `${lines.map((l, i) => (i === 2 ? l.replace('"time":"2', '"time":"1') : l)).join('\n')}\n`);
    const e = await verify(edited);
    t.equal(e.code, 1);
    t.match(e.out, `SKEIN_POLICY_AUDIT_CHAIN_BROKEN ${edited}:3: altered`, 'an edited line is named');
    const cut = join(tmp, 'cut.log');
    writeFileSync(cut, `${lines.filter((_, i) => i !== 4).join('\n')}\n`);
    t.match((await verify(cut)).out, `${cut}:5: broken link`, 'a removed line: the next one is named');
  });
});
