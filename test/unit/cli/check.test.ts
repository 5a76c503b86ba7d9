/**
 * `skein check`: passes on this machine with its real kernel, BTF, mount table and (as root)
 * capabilities; fails with the right hint when bpffs, BTF, cgroup v2, capabilities, a recent
 * kernel or the CNI folder is missing — simulated by pointing the path options at files this
 * test writes, never by changing the machine; the local agent through the real admin and
 * readiness servers; the cluster against a real controller process (folder mode, TLS, hosted
 * CA) with a real agent config stream, and the CRDs against the stand-in API server
 * (test/unit/controller/fake-apiserver.ts: no real API server can run here).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { type AdminDeps, startAdmin } from '../../../src/agent/admin.js';
import { checkCommand } from '../../../src/cli/check/command.js';
import { crdObject } from '../../../src/controller/crds.js';
import { KINDS } from '../../../src/controller/kinds.js';
import { ControllerConfigSource } from '../../../src/config/controller-source.js';
import { ConfigStore } from '../../../src/config/store.js';
import { createBootstrapTokens } from '../../../src/identity/ca/bootstrap-tokens.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import { captureOutput } from './capture-output.js';
import { tlsStandIn } from '../controller/stand-in-kube.js';
import { baseCluster, tempDir, until, writeCluster } from '../controller/helpers.js';

interface Json {
  ok: boolean;
  code?: string;
  checks: { name: string; ok: boolean; detail: string; hint?: string }[];
}

async function check(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const { result, out, err } = await captureOutput(() => checkCommand(args));
  return { code: result, out, err };
}
async function checkJson(args: string[]): Promise<{ code: number; json: Json }> {
  const r = await check([...args, '--output', 'json']);
  return { code: r.code, json: JSON.parse(r.out) as Json };
}
const byName = (j: Json, name: string) => j.checks.find((c) => c.name === name);

const isRoot = process.getuid?.() === 0;
const realMountinfo = readFileSync('/proc/self/mountinfo', 'utf8');

/** This machine is not a Kubernetes node (no /etc/cni/net.d): a folder stands in for the CNI one. */
function nodeArgs(dir: string): string[] {
  const cni = join(dir, 'net.d');
  mkdirSync(cni, { recursive: true });
  return ['--cni-conf-dir', cni, '--no-agent'];
}

t.test('passes on this machine (real kernel, BTF, mounts, capabilities)', async (t) => {
  const dir = tempDir(t, 'check-pass');
  const { code, out, err } = await check(nodeArgs(dir));
  if (!isRoot) {
    t.match(out, /✖ capabilities/, 'not root: the capabilities check fails, as it should');
    return;
  }
  t.equal(code, 0, `exit 0 (stdout: ${out} stderr: ${err})`);
  for (const name of ['kernel', 'btf', 'cgroup2', 'bpffs', 'capabilities', 'cni-conf-dir']) t.match(out, new RegExp(`^✔ ${name}: `, 'm'), `${name} passes`);
  t.match(out, /all 6 checks passed/);
  t.equal(err, '');
  const { json } = await checkJson(nodeArgs(dir));
  t.equal(json.ok, true);
  t.equal(json.checks.length, 6);
  t.notOk(json.code);
});

t.test('bpffs missing (simulated): fails with the mount hint, exit 1, the rest still passes', async (t) => {
  const dir = tempDir(t, 'check-bpffs');
  const mountinfo = join(dir, 'mountinfo');
  const without = realMountinfo.split('\n').filter((l) => !/ - bpf /.test(l));
  t.ok(without.length < realMountinfo.split('\n').length, 'this machine has bpffs; the copy has none');
  writeFileSync(mountinfo, without.join('\n'));
  const { code, out, err } = await check([...nodeArgs(dir), '--mountinfo', mountinfo]);
  t.equal(code, 1, 'exit 1');
  t.match(out, /^✖ bpffs: no bpf filesystem holds the pin root \/sys\/fs\/bpf\/skein$/m);
  t.match(out, /^ {4}hint: mount -t bpf bpf \/sys\/fs\/bpf/m);
  t.match(out, /^✔ cgroup2: /m, 'the other mount checks are unaffected');
  t.match(err, /SKEIN_INSTALL_CHECK_FAILED/);
  // A pin root outside every bpffs mount is the same failure.
  const { code: c2, json } = await checkJson([...nodeArgs(dir), '--pin-root', join(dir, 'pins')]);
  t.equal(c2, 1);
  t.equal(byName(json, 'bpffs')?.ok, false);
  t.equal(json.code, 'SKEIN_INSTALL_CHECK_FAILED');
  t.equal(json.checks.filter((c) => !c.ok).length, isRoot ? 1 : 2, 'only bpffs fails (and capabilities when not root)');
});

t.test('BTF missing (simulated): fails with the CONFIG_DEBUG_INFO_BTF hint', async (t) => {
  const dir = tempDir(t, 'check-btf');
  const { code, json } = await checkJson([...nodeArgs(dir), '--btf', join(dir, 'vmlinux')]);
  t.equal(code, 1);
  const btf = byName(json, 'btf');
  t.equal(btf?.ok, false);
  t.match(btf?.detail, `no kernel BTF at ${join(dir, 'vmlinux')}`);
  t.match(btf?.hint, /CONFIG_DEBUG_INFO_BTF=y/);
  writeFileSync(join(dir, 'empty'), '');
  t.equal(byName((await checkJson([...nodeArgs(dir), '--btf', join(dir, 'empty')])).json, 'btf')?.ok, false, 'an empty file is no BTF');
});

t.test('old kernel, no cgroup v2, no capabilities, no CNI folder: each fails with its hint', async (t) => {
  const dir = tempDir(t, 'check-more');
  const old = (await checkJson([...nodeArgs(dir), '--kernel-release', '5.4.0-150-generic'])).json;
  t.equal(byName(old, 'kernel')?.ok, false);
  t.match(byName(old, 'kernel')?.detail, /sk_lookup programs and netns bpf_link \(since 5\.9\)/);
  t.match(byName(old, 'kernel')?.hint, /kernel >= 5\.17/);
  const almost = (await checkJson([...nodeArgs(dir), '--kernel-release', '5.15.0'])).json;
  t.match(byName(almost, 'kernel')?.detail, /ingress_ifindex/);
  t.notMatch(byName(almost, 'kernel')?.detail, /5\.9/, 'only what 5.15 lacks');
  t.equal(byName((await checkJson([...nodeArgs(dir), '--kernel-release', '5.17.0'])).json, 'kernel')?.ok, true, '5.17 is enough');

  const mountinfo = join(dir, 'mountinfo');
  writeFileSync(mountinfo, realMountinfo.split('\n').filter((l) => !/ - cgroup2 /.test(l)).join('\n'));
  const cg = byName((await checkJson([...nodeArgs(dir), '--mountinfo', mountinfo])).json, 'cgroup2');
  t.equal(cg?.ok, false);
  t.match(cg?.hint, /mount -t cgroup2/);

  const status = join(dir, 'status');
  writeFileSync(status, 'Name:\tapp\nCapEff:\t0000000000000000\n');
  const caps = byName((await checkJson([...nodeArgs(dir), '--proc-status', status])).json, 'capabilities');
  t.equal(caps?.ok, false);
  t.match(caps?.detail, 'missing CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN');
  t.match(caps?.hint, /as root/);

  const cni = byName((await checkJson(['--no-agent', '--cni-conf-dir', join(dir, 'absent')])).json, 'cni-conf-dir');
  t.equal(cni?.ok, false);
  t.match(cni?.hint, /--cni-conf-dir/);
  const unreadable = byName((await checkJson([...nodeArgs(dir), '--mountinfo', join(dir, 'nope')])).json, 'bpffs');
  t.equal(unreadable?.ok, false, 'an unreadable mount table fails the check, it does not crash');
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

t.test('the local agent: admin socket and readiness, through the agent\'s own servers', async (t) => {
  const dir = tempDir(t, 'check-agent');
  const socket = join(dir, 'agent.sock');
  const readyPort = await freePort();
  const args = [...nodeArgs(dir).filter((a) => a !== '--no-agent'), '--admin-socket', socket, '--agent-ready', `127.0.0.1:${readyPort}`];
  // No agent: auto mode skips; --agent fails both with hints.
  t.notOk(byName((await checkJson(args)).json, 'agent-admin'), 'no socket: not checked by default');
  const absent = await checkJson([...args, '--agent']);
  t.equal(absent.code, 1);
  t.equal(byName(absent.json, 'agent-admin')?.ok, false);
  t.match(byName(absent.json, 'agent-admin')?.hint, /is the agent running/);
  t.equal(byName(absent.json, 'agent-ready')?.ok, false);

  const agent = { ready: false };
  const deps = { agent, capture: {}, certificates: {}, registry: { contentType: 'text/plain', metrics: async () => '' }, log: silentLogger() } as unknown as AdminDeps;
  const stop = await startAdmin(deps, { adminSocket: socket, metrics: { host: '127.0.0.1', port: await freePort() }, ready: { host: '127.0.0.1', port: readyPort } });
  t.teardown(stop);
  const starting = (await checkJson(args)).json;
  t.equal(byName(starting, 'agent-admin')?.ok, true, 'found by its socket (auto)');
  t.equal(byName(starting, 'agent-ready')?.ok, false, 'not ready yet');
  t.match(byName(starting, 'agent-ready')?.detail, /503/);
  t.match(byName(starting, 'agent-ready')?.hint, /skein admin GET \/capture/);
  agent.ready = true;
  const ready = await checkJson(args);
  t.equal(byName(ready.json, 'agent-ready')?.ok, true);
  if (isRoot) t.equal(ready.code, 0, 'everything passes with a ready agent');
});

t.test('flags: bad ones exit 2; json and text agree', async (t) => {
  t.equal((await check(['--output', 'yaml'])).code, 2);
  t.equal((await check(['--agent', '--no-agent'])).code, 2);
  t.equal((await check(['--controller', '127.0.0.1:1'])).code, 2, '--controller needs a credential');
  t.equal((await check(['--skip-node'])).code, 2);
  t.equal((await check(['--bogus'])).code, 2);
  t.equal((await check(['--expect-agents', 'many', '--skip-node', '--kube-server', 'http://127.0.0.1:1'])).code, 2);
  const help = await check(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /--btf PATH/);
});

t.test('CRDs against the API server (stand-in over TLS)', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const dir = tempDir(t, 'check-crds');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, api.token);
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, caPem);
  const crds = KINDS.filter((k) => k.crd).map((k) => crdObject(k));
  for (const crd of crds.slice(1)) api.apply(crd as never);
  const args = ['--skip-node', '--kube-server', server, '--kube-token-file', tokenFile, '--kube-ca-file', caFile];
  const missing = await checkJson(args);
  t.equal(missing.code, 1);
  const c = byName(missing.json, 'crds');
  t.match(c?.detail, `missing: ${(crds[0] as { metadata: { name: string } }).metadata.name}`);
  t.match(c?.hint, /skein install \| kubectl apply -f -/);
  api.apply(crds[0] as never);
  const all = await checkJson(args);
  t.equal(all.code, 0);
  t.match(byName(all.json, 'crds')?.detail, `${crds.length} CRDs installed`);
  const wrongToken = join(dir, 'wrong');
  writeFileSync(wrongToken, 'nope');
  const denied = await checkJson(['--skip-node', '--kube-server', server, '--kube-token-file', wrongToken, '--kube-ca-file', caFile]);
  t.equal(byName(denied.json, 'crds')?.ok, false, 'an API error fails the check');
  t.match(byName(denied.json, 'crds')?.detail, /SKEIN_KUBE_API_REFUSED/);
});

const CHILD = join(import.meta.dirname, '..', 'controller', 'run-controller-child.ts');

t.test('cluster: controller, agents, certificates against a real controller', async (t) => {
  const dir = tempDir(t, 'check-cluster');
  const state = join(dir, 'state');
  mkdirSync(state);
  writeCluster(state, baseCluster());
  const tokens = await createBootstrapTokens(join(dir, 'tokens'), ['node-a', 'node-b']);
  const roots = join(dir, 'roots.pem');
  const child: ChildProcess = spawn(
    process.execPath,
    [...process.execArgv, CHILD, '--folder', state, '--config-listen', '127.0.0.1:0', '--ca-listen', '127.0.0.1:0', '--root-file', join(dir, 'ca', 'root.json'), '--roots-out', roots, '--tokens-dir', join(dir, 'tokens'), '--metrics', 'off', '--log-file', join(dir, 'controller.log')],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SKEIN_CONTROLLER_CHILD: '1' } },
  );
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('controller ready', () => out.includes('ready') || child.exitCode !== null, 30_000);
  const port = Number(/config stream on .* \(port (\d+), TLS\)/.exec(out)?.[1]);
  t.ok(port > 0, `controller on ${port}`);
  const cluster = ['--skip-node', '--controller', `127.0.0.1:${port}`, '--token-file', tokens['node-a']!, '--roots', roots];

  const none = await checkJson(cluster);
  t.equal(none.code, 1, 'no agent connected yet');
  t.equal(byName(none.json, 'controller')?.ok, true);
  t.match(byName(none.json, 'agents')?.detail, '0 agent(s) connected to this replica, expected 1');
  t.equal(byName(none.json, 'controller-certificate')?.ok, true);
  t.match(byName(none.json, 'controller-certificate')?.detail, /verified against the roots, valid for/);
  t.equal(byName(none.json, 'trust-bundle')?.ok, true);

  const source = new ControllerConfigSource({ address: `127.0.0.1:${port}`, node: 'node-a', tokenFile: tokens['node-a']!, rootsFile: roots });
  t.teardown(() => source.stop());
  const store = new ConfigStore();
  await source.start((s) => store.apply(s), () => {});
  let text = await check(cluster);
  await until('the agent is counted', async () => {
    text = await check(cluster);
    return text.code === 0;
  }, 10_000);
  t.match(text.out, /^✔ agents: 1 agent\(s\) connected, none rejecting: node-a$/m);
  t.match(text.out, /all 4 checks passed/);
  t.equal((await checkJson([...cluster, '--expect-agents', '2'])).code, 1, 'two expected, one connected');

  // Near expiry: demand more validity than the certificates have.
  const strict = await checkJson([...cluster, '--cert-min-hours', '100000', '--root-min-days', '100000']);
  t.equal(byName(strict.json, 'controller-certificate')?.ok, false);
  t.match(byName(strict.json, 'controller-certificate')?.detail, /expires in/);
  t.equal(byName(strict.json, 'trust-bundle')?.ok, false);
  t.match(byName(strict.json, 'trust-bundle')?.hint, /rotate the mesh CA root/);

  // Roots of another CA: the certificate does not verify; nothing else lets it pass.
  const otherDir = tempDir(t, 'check-other');
  const { CertificateAuthority } = await import('../../../src/identity/ca/ca.js');
  const { MemoryRootStore } = await import('../../../src/identity/ca/root-store.js');
  const other = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: new MemoryRootStore() });
  writeFileSync(join(otherDir, 'roots.pem'), other.trustBundlePem().join('\n'));
  const foreign = await checkJson(['--skip-node', '--controller', `127.0.0.1:${port}`, '--token-file', tokens['node-a']!, '--roots', join(otherDir, 'roots.pem')]);
  t.equal(foreign.code, 1);
  t.equal(byName(foreign.json, 'controller')?.ok, false);
  t.equal(byName(foreign.json, 'controller-certificate')?.ok, false);
  t.match(byName(foreign.json, 'controller-certificate')?.hint, /current trust bundle/);

  // Controller gone.
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  const gone = await checkJson(cluster);
  t.equal(gone.code, 1);
  t.equal(byName(gone.json, 'controller')?.ok, false);
  t.match(byName(gone.json, 'controller')?.hint, /is the controller reachable/);
});
