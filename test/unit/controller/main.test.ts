// `runController` as a process (the CLI entry): folder mode with bootstrap tokens, the CA
// hosted and authorizing by the controller's pods, the config stream over TLS with the CA's
// roots, progress lines, and a clean stop on SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createBootstrapTokens, readBootstrapToken } from '../../../src/identity/ca/bootstrap-tokens.js';
import { CaClient } from '../../../src/identity/workload/ca-client.js';
import { ControllerConfigSource } from '../../../src/config/controller-source.js';
import { ConfigStore } from '../../../src/config/store.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../../src/identity/x509/keys.js';
import { baseCluster, tempDir, until, writeCluster } from './helpers.js';

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

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'clean exit on SIGTERM');
  t.match(out, /stopping/);
});

t.test('bad flags exit 2 with usage', async (t) => {
  const child = spawn(process.execPath, [...process.execArgv, CHILD, '--nonsense'], { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(code, 2);
  t.match(err, /usage: skein controller/);
});
