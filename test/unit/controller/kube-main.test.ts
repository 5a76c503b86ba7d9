// `skein controller --kube` as a process against the stand-in API server over TLS
// (fake-apiserver.ts, stand-in-kube.ts: no real API server can run here): it takes the CA Lease, stores the CA in the Secret, and
// publishes the trust bundle into the ConfigMap the agent DaemonSet mounts as --ca-root-file
// — the same roots its CA serves.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { tlsStandIn } from './stand-in-kube.js';
import { tempDir, until } from './helpers.js';

const CHILD = join(import.meta.dirname, 'run-controller-child.ts');

t.test('kube mode: the lease holder writes the trust bundle ConfigMap', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const dir = tempDir(t, 'kube-main');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, api.token);
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, caPem);
  const roots = join(dir, 'roots.pem');
  const args = ['--kube', '--kube-server', server, '--kube-token-file', tokenFile, '--kube-ca-file', caFile, '--namespace', 'skein-system', '--config-listen', '127.0.0.1:0', '--ca-listen', '127.0.0.1:0', '--metrics', 'off', '--no-status-writes', '--roots-out', roots, '--identity', 'replica-1', '--log-file', join(dir, 'controller.log')];
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SKEIN_CONTROLLER_CHILD: '1' } });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('controller ready', () => out.includes('ready') || child.exitCode !== null, 30_000);
  t.equal(child.exitCode, null, `running (stdout: ${out} stderr: ${err})`);
  t.match(out, /trust bundle kept in ConfigMap skein-system\/skein-trust-bundle/);
  const bundle = () => (api.get('v1', 'ConfigMap', 'skein-system', 'skein-trust-bundle')?.data as Record<string, string> | undefined)?.['ca.crt'];
  await until('ConfigMap written', () => bundle() !== undefined, 10_000);
  t.equal(bundle()?.trim(), readFileSync(roots, 'utf8').trim(), 'the ConfigMap holds the roots the CA serves');
  t.ok(api.get('v1', 'Secret', 'skein-system', 'skein-ca'), 'the CA state in its Secret');
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  t.equal(child.exitCode, 0, 'clean stop');
});
