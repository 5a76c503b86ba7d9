/**
 * The skein-cni binary (cni/skein-cni.c) as a container runtime runs it: CNI_* variables, the
 * config on stdin. Without the agent's socket, ADD exits non-zero with a CNI error result
 * (code 11) and DEL succeeds; with an agent (a real unix socket server here, speaking the
 * agent's side through answerCniRequest) it forwards the call and prints the agent's answer
 * with the agent's exit code. Built from source into a temp dir when `make build-cni` has not
 * run (needs cc; no root).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { answerCniRequest } from '../../../src/agent/cni-server.js';
import { type CniCall, passThroughAnswer } from '../../../src/agent/cni-request.js';
import { repoPath } from '../../../src/paths.js';
import { silentLogger } from '../../../src/telemetry/log.js';

const work = mkdtempSync(join(tmpdir(), 'skein-cni-test-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

function binary(): string {
  const built = repoPath('build', 'cni', 'skein-cni');
  if (existsSync(built)) return built;
  const out = join(work, 'skein-cni');
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', out, repoPath('cni', 'skein-cni.c')]);
  return out;
}
const bin = binary();

const prevResult = { cniVersion: '0.4.0', interfaces: [{ name: 'eth0' }], ips: [{ version: '4', address: '10.244.1.10/24', gateway: '10.244.1.1' }] };

function run(command: string, config: Record<string, unknown>, args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=echo-0;K8S_POD_UID=u-1'): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [], {
      env: { CNI_COMMAND: command, CNI_CONTAINERID: 'c0ffee', CNI_NETNS: '/run/netns/test-pod', CNI_IFNAME: 'eth0', CNI_ARGS: args, CNI_PATH: '/opt/cni/bin:/usr/lib/cni' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    child.on('error', reject);
    child.stdin.on('error', () => {}); // VERSION reads no config
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(JSON.stringify({ cniVersion: '0.4.0', name: 'k8s-pod-network', type: 'skein-cni', prevResult, ...config }));
  });
}

const sockets = new Set<import('node:net').Socket>();
t.teardown(() => {
  for (const s of sockets) s.destroy();
});

function agentAt(path: string, handle: (call: CniCall, raw: string) => Promise<{ exitCode: number; stdout: string }> | 'hang'): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    let raw = '';
    sock.on('data', (c) => {
      raw += c;
    });
    sock.on('end', () => {
      void answerCniRequest(
        raw,
        async (call) => {
          const r = handle(call, raw);
          if (r === 'hang') return new Promise(() => {});
          return r;
        },
        2_000, // the hanging agent's call ends here, so the test process does not linger
        silentLogger(),
      ).then((a) => sock.end(`${a.exitCode}\n${a.stdout}`));
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

t.test('no agent: ADD fails with a CNI error result, DEL succeeds, VERSION answers', async (t) => {
  const socket = join(work, 'absent.sock');
  const add = await run('ADD', { agent_socket: socket });
  t.not(add.code, 0, 'ADD exits non-zero');
  const err = JSON.parse(add.stdout) as { cniVersion: string; code: number; msg: string; details: string };
  t.equal(err.cniVersion, '0.4.0', "in the config's cniVersion");
  t.equal(err.code, 11, 'code 11: try again later (the runtime retries the sandbox)');
  t.match(err.msg, /not reachable/);
  t.match(err.details, /^SKEIN_AGENT_CNI_UNREACHABLE: .*absent\.sock/);
  const check = await run('CHECK', { agent_socket: socket });
  t.not(check.code, 0, 'CHECK fails too');
  const del = await run('DEL', { agent_socket: socket });
  t.equal(del.code, 0, 'DEL succeeds without the agent');
  t.equal(del.stdout, '', 'and prints nothing');
  const version = await run('VERSION', {});
  t.equal(version.code, 0);
  t.same(JSON.parse(version.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  const noCmd = await new Promise<number>((resolve) => spawn(bin, [], { env: {}, stdio: 'ignore' }).on('close', (c) => resolve(c ?? -1)));
  t.not(noCmd, 0, 'without CNI_COMMAND it refuses');
});

t.test('no agent: excluded and (per the agent) unmeshed namespaces pass through, others wait', async (t) => {
  const socket = join(work, 'gone.sock');
  const excluded = await run('ADD', { agent_socket: socket, exclude_namespaces: ['kube-system', 'shop'] });
  t.equal(excluded.code, 0, 'an excluded namespace never asks the agent');
  t.same(JSON.parse(excluded.stdout), prevResult, 'prevResult printed unchanged');
  writeFileSync(`${socket}.unmeshed-namespaces`, 'legacy\nother\n');
  const legacy = await run('ADD', { agent_socket: socket }, 'K8S_POD_NAMESPACE=legacy;K8S_POD_NAME=p');
  t.equal(legacy.code, 0, 'a namespace the agent listed as outside the mesh starts without it');
  t.same(JSON.parse(legacy.stdout), prevResult);
  const shop = await run('ADD', { agent_socket: socket });
  t.not(shop.code, 0, 'a namespace not listed waits for the agent');
  t.equal(JSON.parse(shop.stdout).code, 11);
  const prefix = await run('ADD', { agent_socket: socket }, 'K8S_POD_NAMESPACE=leg;K8S_POD_NAME=p');
  t.not(prefix.code, 0, 'whole lines only: "leg" is not "legacy"');
});

t.test('with an agent: the call is forwarded whole, the answer printed with its exit code', async (t) => {
  const socket = join(work, 'agent.sock');
  let seen: Record<string, unknown> | undefined;
  let call: CniCall | undefined;
  const server = await agentAt(socket, async (c, raw) => {
    seen = JSON.parse(raw) as Record<string, unknown>;
    call = c;
    return passThroughAnswer(c);
  });
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const add = await run('ADD', { agent_socket: socket, timeout_ms: 5000 });
  t.equal(add.code, 0, `ADD succeeds (${add.stderr})`);
  t.same(JSON.parse(add.stdout), prevResult, "the agent's stdout: prevResult passed through");
  t.match(seen, { command: 'ADD', containerId: 'c0ffee', netns: '/run/netns/test-pod', ifName: 'eth0', path: '/opt/cni/bin:/usr/lib/cni' });
  t.match(call, { pod: { namespace: 'shop', name: 'echo-0', uid: 'u-1' }, prevIps: ['10.244.1.10'], network: 'k8s-pod-network' }, 'the agent parsed the forwarded call');

  const refusing = join(work, 'refusing.sock');
  const s2 = await agentAt(refusing, async (c) => ({ exitCode: 1, stdout: `${JSON.stringify({ cniVersion: c.cniVersion, code: 11, msg: 'not captured' })}\n` }));
  t.teardown(() => new Promise<void>((r) => s2.close(() => r())));
  const no = await run('ADD', { agent_socket: refusing });
  t.equal(no.code, 1, "the agent's exit code");
  t.match(JSON.parse(no.stdout), { code: 11, msg: 'not captured' }, "the agent's error result");

  const bad = await run('ADD', { agent_socket: socket }, 'K8S_POD_NAMESPACE=shop');
  t.equal(bad.code, 1, 'a malformed call is refused by the agent');
  t.match(JSON.parse(bad.stdout), { code: 4, details: /SKEIN_AGENT_CNI_BAD_REQUEST/ });
});

t.test('an agent that does not answer in timeout_ms: ADD fails, DEL succeeds', async (t) => {
  const socket = join(work, 'hang.sock');
  const server = await agentAt(socket, () => 'hang');
  t.teardown(() => {
    for (const s of sockets) s.destroy(); // the agent that never answers holds its end open
    return new Promise<void>((r) => server.close(() => r()));
  });
  const t0 = Date.now();
  const add = await run('ADD', { agent_socket: socket, timeout_ms: 300 });
  t.ok(Date.now() - t0 < 5000, 'bounded by timeout_ms');
  t.equal(add.code, 1);
  t.match(JSON.parse(add.stdout), { code: 11, details: /^SKEIN_AGENT_CNI_TIMEOUT/ });
  const del = await run('DEL', { agent_socket: socket, timeout_ms: 300 });
  t.equal(del.code, 0);
});
