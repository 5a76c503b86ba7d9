// `runController` as a process (the CLI entry): folder mode with bootstrap tokens, the CA
// hosted and authorizing by the controller's pods, the config stream over TLS with the CA's
// roots, progress lines, and a clean stop on SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createBootstrapTokens, readBootstrapToken } from '../../../src/identity/ca/bootstrap-tokens.js';
import { CaClient } from '../../../src/identity/workload/ca-client.js';
import { ControllerConfigSource } from '../../../src/config/controller-source.js';
import { ConfigStore } from '../../../src/config/store.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../../src/identity/x509/keys.js';
import { stringify } from 'yaml';
import { NODE_NAME_EXTRA } from '../../../src/identity/ca/token-review.js';
import { baseCluster, tempDir, until, writeCluster } from './helpers.js';
import { tlsStandIn } from './stand-in-kube.js';

const CHILD = join(import.meta.dirname, 'run-controller-child.ts');
const CHILD_ENV = { ...process.env, SKEIN_CONTROLLER_CHILD: '1' };

t.test('skein controller --folder: TLS config stream, hosted CA, SIGTERM', async (t) => {
  const dir = tempDir(t, 'main');
  const state = join(dir, 'state');
  const files = baseCluster();
  mkdirSync(state);
  writeCluster(state, files);
  const tokens = await createBootstrapTokens(join(dir, 'tokens'), ['node-a', 'node-b']);
  const roots = join(dir, 'roots.pem');
  const args = [
    '--folder', state,
    '--config-listen', '127.0.0.1:0',
    '--ca-listen', '127.0.0.1:0',
    '--root-file', join(dir, 'ca', 'root.json'),
    '--roots-out', roots,
    '--tokens-dir', join(dir, 'tokens'),
    '--trust-domain', 'cluster.local',
    '--log-file', join(dir, 'controller.log'),
    '--metrics', '127.0.0.1:0',
  ];
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('controller ready', () => out.includes('ready') || child.exitCode !== null, 30_000);
  t.equal(child.exitCode, null, `running (stderr: ${err})`);
  t.match(out, /index built: 12 objects, \d+ resources, 0 refused/);
  const configPort = Number(/config stream on .* \(port (\d+), TLS\)/.exec(out)?.[1]);
  const caPort = Number(/CA on .* \(port (\d+)\)/.exec(out)?.[1]);
  t.ok(configPort > 0 && caPort > 0, `ports ${configPort} ${caPort}`);
  const rootsPem = readFileSync(roots, 'utf8');
  t.match(rootsPem, /BEGIN CERTIFICATE/);

  // An agent over TLS with the published roots.
  const store = new ConfigStore();
  const source = new ControllerConfigSource({
    address: `127.0.0.1:${configPort}`,
    node: 'node-a',
    tokenFile: tokens['node-a'],
    rootsFile: roots,
  });
  t.teardown(() => source.stop());
  await source.start((s) => store.apply(s), () => {});
  t.same(store.localWorkloads('node-a').map((w) => w.name).sort(), ['api-1', 'web-1']);

  // The CA signs identities of pods on the caller's node only (meshed pods).
  const ca = new CaClient({ address: `127.0.0.1:${caPort}`, rootsPem: [rootsPem], token: await readBootstrapToken(tokens['node-a']!) });
  t.teardown(() => ca.close());
  const keys = await generateP256KeyPair();
  const web = 'spiffe://cluster.local/ns/shop/sa/web';
  const issued = await ca.issue({ csrPem: await createWorkloadCsr(web, keys), ttlSeconds: 3600 });
  t.ok(issued.certChainPem.length >= 2, 'web identity issued to node-a (web-1 runs there)');
  const caB = new CaClient({ address: `127.0.0.1:${caPort}`, rootsPem: [rootsPem], token: await readBootstrapToken(tokens['node-b']!) });
  t.teardown(() => caB.close());
  await t.rejects(caB.issue({ csrPem: await createWorkloadCsr('spiffe://cluster.local/ns/legacy/sa/default', keys), ttlSeconds: 3600 }), 'legacy is not meshed: refused');

  // The controller's metrics: the CA's, config pushes answered, agents connected.
  const metricsPort = Number(/metrics on .* \(port (\d+)\)/.exec(out)?.[1]);
  t.ok(metricsPort > 0, `metrics port ${metricsPort}`);
  let text = '';
  await until('the ACK counted', async () => {
    text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    return /skein_controller_config_answers_total\{result="ack"\} [1-9]/.test(text);
  }, 10_000);
  t.match(text, /skein_controller_agents_connected 1/);
  t.match(text, /skein_controller_config_pushes_total\{kind="full"\} 1/);
  t.match(text, /skein_controller_config_push_duration_seconds_count\{result="ack"\} [1-9]/);
  t.match(text, /skein_ca_certificates_issued_total [1-9]/, 'the CA\'s metrics are served');
  t.match(text, /skein_controller_config_version_info\{version="[^"]+"\} 1/);
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/other`)).status, 404);
  // The Deployment's probes (skein install) on the metrics port.
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/healthz/live`)).status, 200, 'live');
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/healthz/ready`)).status, 200, 'ready once serving');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'clean exit on SIGTERM');
  t.match(out, /stopping/);
});

// Kube mode against the STAND-IN API server (no real one can run here), over TLS with its
// cluster CA: the controller process loads --kubeconfig with @kubernetes/client-node, lists
// and watches, takes the Lease, stores the CA in a Secret, and authenticates an agent's CA
// call by a TokenReview sent to the same API server with the same CA and credential.
t.test('skein controller --kube --kubeconfig: informers, Lease, CA Secret, TokenReview', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  for (const objs of Object.values(baseCluster())) for (const o of objs) api.apply(structuredClone(o));
  const agent = 'system:serviceaccount:skein-system:skein-agent';
  api.tokenReviews.set('projected-token-node-a', {
    authenticated: true,
    audiences: ['skein-controller'],
    user: { username: agent, extra: { [NODE_NAME_EXTRA]: ['node-a'] } },
  });
  const dir = tempDir(t, 'main-kube');
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'stand-in', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } }],
      users: [{ name: 'skein-controller', user: { token: api.token } }],
      contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user: 'skein-controller', namespace: 'skein-system' } }],
      'current-context': 'stand-in',
    }),
  );
  const roots = join(dir, 'roots.pem');
  const args = ['--kube', '--kubeconfig', kubeconfig, '--config-listen', '127.0.0.1:0', '--ca-listen', '127.0.0.1:0', '--roots-out', roots, '--metrics', 'off', '--identity', 'replica-1', '--log-file', join(dir, 'controller.log')];
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...CHILD_ENV, KUBECONFIG: '', KUBERNETES_SERVICE_HOST: '' } });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('controller ready', () => out.includes('ready') || child.exitCode !== null, 30_000);
  t.equal(child.exitCode, null, `running (stderr: ${err})`);
  t.match(out, `watching the Kubernetes API at ${server} (credentials: ${kubeconfig})`);
  t.match(out, /leading: this replica writes the CA state/);
  t.match(out, /index built: 12 objects/, 'listed every kind from the stand-in');
  t.ok(api.counts.watches >= 12, `watching (${api.counts.watches} watches)`);
  t.match(api.get('coordination.k8s.io/v1', 'Lease', 'skein-system', 'skein-controller-ca')?.spec, { holderIdentity: 'replica-1' });
  t.ok(api.get('v1', 'Secret', 'skein-system', 'skein-ca'), 'CA state in its Secret');

  const caPort = Number(/CA on .* \(port (\d+)\)/.exec(out)?.[1]);
  const rootsPem = readFileSync(roots, 'utf8');
  const keys = await generateP256KeyPair();
  const ca = new CaClient({ address: `127.0.0.1:${caPort}`, rootsPem: [rootsPem], token: 'projected-token-node-a' });
  t.teardown(() => ca.close());
  const issued = await ca.issue({ csrPem: await createWorkloadCsr('spiffe://cluster.local/ns/shop/sa/web', keys), ttlSeconds: 3600 });
  t.ok(issued.certChainPem.length >= 2, 'node-a authenticated by TokenReview: web identity issued');
  t.ok(api.requests.some((r) => r.method === 'POST' && r.path === '/apis/authentication.k8s.io/v1/tokenreviews'), 'the TokenReview went to the API server of the kubeconfig');
  const forged = new CaClient({ address: `127.0.0.1:${caPort}`, rootsPem: [rootsPem], token: 'forged' });
  t.teardown(() => forged.close());
  await t.rejects(forged.issue({ csrPem: await createWorkloadCsr('spiffe://cluster.local/ns/shop/sa/web', keys), ttlSeconds: 3600 }), 'a token the API server does not authenticate: refused');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'clean exit on SIGTERM');
  t.match(api.get('coordination.k8s.io/v1', 'Lease', 'skein-system', 'skein-controller-ca')?.spec, { holderIdentity: '' }, 'the Lease released on stop');
});

t.test('bad flags exit 2 with usage', async (t) => {
  const child = spawn(process.execPath, [...process.execArgv, CHILD, '--nonsense'], { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(code, 2);
  t.match(err, /usage: skein controller/);
});
