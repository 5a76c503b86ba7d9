// The controller's Kubernetes client is @kubernetes/client-node; these tests check how it is
// configured and that it reaches the API server with the right credentials and CA. The API
// server is a STAND-IN (fake-apiserver.ts over TLS): no real Kubernetes API server can run
// here. It checks the bearer token of every request, so each way of getting a credential
// (kubeconfig token, exec auth plugin, in-cluster token file that rotates) is proven by the
// stand-in accepting it; it serves a certificate from a throw-away cluster CA, so a client
// with another CA must refuse it.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { KubeApiError, KubeClient } from '../../../src/controller/kube/client.js';
import { IN_CLUSTER_DIR, loadKubeConfig } from '../../../src/controller/kube/kube-config.js';
import { NODE_NAME_EXTRA, TokenReviewAuthenticator } from '../../../src/identity/ca/token-review.js';
import { namespace, tempDir } from './helpers.js';
import { clusterCa, tlsStandIn, tokenKubeConfig } from './stand-in-kube.js';

/** A kubeconfig file as kubectl writes it (certificate-authority-data inline). */
function writeKubeconfig(dir: string, server: string, caPem: string, user: Record<string, unknown>, extra: { namespace?: string; contexts?: string[] } = {}): string {
  const file = join(dir, 'config');
  const contexts = extra.contexts ?? ['stand-in'];
  writeFileSync(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'stand-in', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } }],
      users: [{ name: 'controller', user }],
      contexts: contexts.map((name) => ({ name, context: { cluster: 'stand-in', user: 'controller', ...(extra.namespace ? { namespace: `${extra.namespace}-${name}` } : {}) } })),
      'current-context': contexts[0],
    }),
  );
  return file;
}

function clientOf(t: Tap.Test, loaded: ReturnType<typeof loadKubeConfig>): KubeClient {
  const c = new KubeClient(loaded.kc, loaded.namespace ? { namespace: loaded.namespace } : {});
  t.teardown(() => c.close());
  return c;
}

/** Moves the clock of `new Date()` / Date.now() forward (the library re-reads a token file at most every 60 s). */
function clockForward(ms: number): () => void {
  const Real = Date;
  class Later extends Real {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(Real.now() + ms);
      else super(...(args as [string]));
    }
    static override now(): number {
      return Real.now() + ms;
    }
  }
  globalThis.Date = Later as DateConstructor;
  return () => {
    globalThis.Date = Real;
  };
}

t.test('kubeconfig with a token: TLS with the cluster CA, pagination, errors with codes', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const dir = tempDir(t, 'kc');
  // `server: https://host:port/` (trailing slash) as kubeconfigs often have it.
  const file = writeKubeconfig(dir, `${server}/`, caPem, { token: api.token }, { namespace: 'ctl', contexts: ['one', 'two'] });
  const loaded = loadKubeConfig({ kubeconfig: file, env: {} });
  t.equal(loaded.from, file);
  t.equal(loaded.namespace, 'ctl-one', "the current context's namespace");
  const client = clientOf(t, loaded);
  t.equal(client.namespace, 'ctl-one');
  for (let i = 0; i < 7; i++) api.apply(namespace(`ns-${i}`));
  const listed = await client.list('/api/v1/namespaces', 3);
  t.equal(listed.items.length, 7, 'all pages followed');
  t.ok(Number(listed.resourceVersion) > 0);
  t.equal(api.lastAuthorization, `Bearer ${api.token}`, 'the stand-in saw the kubeconfig token');
  const missing = await client.request('GET', '/api/v1/namespaces/nope').catch((e: unknown) => e);
  t.ok(missing instanceof KubeApiError && missing.status === 404, '404 surfaces as KubeApiError');
  t.match(missing, { code: 'SKEIN_KUBE_API_REFUSED' });
  // Connections are reused (keep-alive agent per TLS material), not one handshake per request.
  const before = api.counts.connections;
  for (let i = 0; i < 20; i++) await client.request('GET', '/api/v1/namespaces/ns-1');
  t.ok(api.counts.connections - before <= 2, `20 requests over ${api.counts.connections - before} new TLS connection(s)`);

  // Another context of the same file; an unknown one is refused.
  t.equal(loadKubeConfig({ kubeconfig: file, context: 'two', env: {} }).namespace, 'ctl-two');
  t.throws(() => loadKubeConfig({ kubeconfig: file, context: 'three', env: {} }), { code: 'SKEIN_KUBE_CONFIG_INVALID' });
  t.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'absent'), env: {} }), { code: 'SKEIN_KUBE_CONFIG_INVALID' });

  // A wrong token: 401 with its status.
  const wrong = clientOf(t, loadKubeConfig({ kubeconfig: writeKubeconfig(tempDir(t, 'kc-wrong'), server, caPem, { token: 'not-it' }), env: {} }));
  const denied = await wrong.list('/api/v1/namespaces').catch((e: unknown) => e);
  t.ok(denied instanceof KubeApiError && denied.status === 401, 'wrong token: 401');
  t.match(denied, { code: 'SKEIN_KUBE_API_REFUSED' });

  // A server the configured CA does not vouch for is refused before any request is sent.
  const other = await clusterCa();
  const unauthorisedBefore = api.counts.unauthorized;
  const requestsBefore = api.requests.length;
  const untrusting = clientOf(t, loadKubeConfig({ kubeconfig: writeKubeconfig(tempDir(t, 'kc-ca'), server, other.caPem, { token: api.token }), env: {} }));
  const refused = await untrusting.list('/api/v1/namespaces').catch((e: unknown) => e);
  t.match(refused, { code: 'SKEIN_KUBE_API_UNREACHABLE', status: 0 }, 'TLS refused: another CA');
  const watchRefused = await untrusting.watch('/api/v1/namespaces', '0', () => {}).done.catch((e: unknown) => e);
  t.match(watchRefused, { code: 'SKEIN_KUBE_API_UNREACHABLE' }, 'the watch too');
  t.equal(api.requests.length, requestsBefore, 'no request reached the stand-in');
  t.equal(api.counts.unauthorized, unauthorisedBefore);
});

t.test('where the kubeconfig comes from: --kubeconfig, KUBECONFIG, in-cluster, ~/.kube/config, else refused', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const home = tempDir(t, 'home');
  const viaEnv = writeKubeconfig(tempDir(t, 'env'), server, caPem, { token: api.token }, { namespace: 'env' });
  t.equal(loadKubeConfig({ env: { KUBECONFIG: viaEnv }, home }).from, viaEnv, 'KUBECONFIG');
  t.throws(() => loadKubeConfig({ env: {}, home }), { code: 'SKEIN_KUBE_NOT_IN_CLUSTER' }, 'nothing: refused, never http://localhost:8080');
  mkdirSync(join(home, '.kube'));
  writeKubeconfig(join(home, '.kube'), server, caPem, { token: api.token }, { namespace: 'home' });
  const fromHome = loadKubeConfig({ env: {}, home });
  t.equal(fromHome.from, join(home, '.kube', 'config'), '~/.kube/config');
  await clientOf(t, fromHome).list('/api/v1/namespaces');
  t.pass('~/.kube/config works against the stand-in');
  // In a pod the service account wins over a ~/.kube/config.
  const root = tempDir(t, 'root');
  mkdirSync(join(root, IN_CLUSTER_DIR), { recursive: true });
  writeFileSync(join(root, IN_CLUSTER_DIR, 'token'), api.token);
  writeFileSync(join(root, IN_CLUSTER_DIR, 'ca.crt'), caPem);
  const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) };
  t.equal(loadKubeConfig({ env, home, inClusterRoot: root }).from, 'in-cluster');
  t.equal(loadKubeConfig({ env: { ...env, KUBECONFIG: viaEnv }, home, inClusterRoot: root }).from, viaEnv, 'KUBECONFIG before in-cluster');
  const empty = tempDir(t, 'no-sa');
  t.throws(() => loadKubeConfig({ env, home, inClusterRoot: empty }), { code: 'SKEIN_KUBE_CONFIG_INVALID' }, 'in a cluster without a token file');

  // --kube-server with a token file and a CA file (no kubeconfig).
  const tokenFile = join(root, IN_CLUSTER_DIR, 'token');
  const caFile = join(root, IN_CLUSTER_DIR, 'ca.crt');
  const direct = clientOf(t, loadKubeConfig({ server, tokenFile, caFile, env: {} }));
  await direct.list('/api/v1/namespaces');
  t.equal(api.lastAuthorization, `Bearer ${api.token}`, '--kube-server with --kube-token-file');
});

t.test('kubeconfig with an exec auth plugin: the token it prints reaches the stand-in', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const dir = tempDir(t, 'exec');
  const plugin = join(dir, 'credential-plugin.sh');
  // What `aws eks get-token` or `gke-gcloud-auth-plugin` do: print an ExecCredential.
  writeFileSync(
    plugin,
    `#!/bin/sh\necho "$SKEIN_TEST_CALL" >> "${join(dir, 'calls')}"\nprintf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}' "$SKEIN_TEST_TOKEN"\n`,
  );
  chmodSync(plugin, 0o755);
  api.tokens.add('exec-issued-token');
  const exec = (token: string) => ({
    exec: {
      apiVersion: 'client.authentication.k8s.io/v1',
      command: plugin,
      args: [],
      env: [
        { name: 'SKEIN_TEST_TOKEN', value: token },
        { name: 'SKEIN_TEST_CALL', value: 'called' },
      ],
      interactiveMode: 'Never',
    },
  });
  const client = clientOf(t, loadKubeConfig({ kubeconfig: writeKubeconfig(dir, server, caPem, exec('exec-issued-token')), env: {} }));
  api.apply(namespace('exec-ns'));
  const listed = await client.list('/api/v1/namespaces');
  t.ok(listed.items.length >= 1);
  t.equal(api.lastAuthorization, 'Bearer exec-issued-token', 'the stand-in saw the token the plugin printed');
  // A watch asks the plugin too.
  const seen: string[] = [];
  const w = client.watch('/api/v1/namespaces', listed.resourceVersion, (e) => seen.push(e.type));
  t.teardown(() => w.abort());
  api.apply(namespace('exec-ns-2'));
  const t0 = Date.now();
  while (seen.length === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
  t.same(seen, ['ADDED'], 'watch event with the exec credential');
  w.abort();

  // A plugin whose token the API server does not accept: 401; a failing plugin: no request.
  const dir2 = tempDir(t, 'exec2');
  const refused = clientOf(t, loadKubeConfig({ kubeconfig: writeKubeconfig(dir2, server, caPem, exec('forged')), env: {} }));
  await t.rejects(refused.list('/api/v1/namespaces'), { code: 'SKEIN_KUBE_API_REFUSED', status: 401 });
  const dir3 = tempDir(t, 'exec3');
  const broken = clientOf(t, loadKubeConfig({ kubeconfig: writeKubeconfig(dir3, server, caPem, { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: '/bin/false', args: [] } }), env: {} }));
  const before = api.requests.length + api.counts.unauthorized;
  await t.rejects(broken.list('/api/v1/namespaces'), { code: 'SKEIN_KUBE_API_UNREACHABLE' }, 'a failing plugin: refused with a code');
  t.equal(api.requests.length + api.counts.unauthorized, before, 'nothing sent without a credential');
});

t.test('in-cluster config from the service-account files: the rotated token reaches the stand-in', async (t) => {
  const { api, caPem } = await tlsStandIn(t, { token: 'sa-token-1' });
  const root = tempDir(t, 'incluster');
  const sa = join(root, IN_CLUSTER_DIR);
  mkdirSync(sa, { recursive: true });
  // A projected token file has no trailing newline (the kubelet writes it so).
  writeFileSync(join(sa, 'token'), 'sa-token-1');
  writeFileSync(join(sa, 'ca.crt'), caPem);
  writeFileSync(join(sa, 'namespace'), 'skein-system');
  const loaded = loadKubeConfig({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, inClusterRoot: root });
  t.equal(loaded.from, 'in-cluster');
  t.equal(loaded.namespace, 'skein-system', 'namespace from the service-account file');
  const client = clientOf(t, loaded);
  t.equal(client.server, `https://127.0.0.1:${api.port}`);
  await client.list('/api/v1/namespaces');
  t.equal(api.lastAuthorization, 'Bearer sa-token-1');

  // The kubelet rotates the token: the old one stays valid for a while (as in Kubernetes),
  // then only the new one is accepted.
  api.tokens.add('sa-token-2');
  writeFileSync(join(sa, 'token'), 'sa-token-2');
  // The library (like client-go) re-reads the file at most every 60 s: move the clock
  // forward rather than wait a minute.
  const restore = clockForward(61_000);
  try {
    await client.list('/api/v1/namespaces');
  } finally {
    restore();
  }
  t.equal(api.lastAuthorization, 'Bearer sa-token-2', 'the stand-in sees the new token after the file changed');
  api.tokens.delete('sa-token-1');
  await client.list('/api/v1/namespaces');
  t.equal(api.lastAuthorization, 'Bearer sa-token-2', 'and keeps seeing it once the old one is revoked');
  const seen: string[] = [];
  const w = client.watch('/api/v1/namespaces', '0', (e) => seen.push(e.type));
  t.teardown(() => w.abort());
  api.apply(namespace('after-rotation'));
  const t0 = Date.now();
  while (!seen.includes('ADDED') && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
  t.ok(seen.includes('ADDED'), 'a watch after rotation authenticates with the new token');
  w.abort();
});

t.test('TokenReview goes to the stand-in with the cluster CA and the controller credential', async (t) => {
  const { api, server, caPem } = await tlsStandIn(t);
  const agent = 'system:serviceaccount:skein-system:skein-agent';
  api.tokenReviews.set('agent-token', { authenticated: true, audiences: ['skein-controller'], user: { username: agent, extra: { [NODE_NAME_EXTRA]: ['node-a'] } } });
  const kc = tokenKubeConfig(server, caPem, api.token);
  const auth = new TokenReviewAuthenticator({ kubeConfig: kc, allowedPrincipals: [agent], audiences: ['skein-controller'] });
  t.same(await auth.authenticate({ bearerToken: 'agent-token' }), { node: 'node-a', method: 'tokenreview', principal: agent });
  t.equal(api.lastAuthorization, `Bearer ${api.token}`, 'sent with the controller credential');
  t.match(api.requests.at(-1), { method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews', body: { spec: { token: 'agent-token', audiences: ['skein-controller'] } } });
  await t.rejects(auth.authenticate({ bearerToken: 'unknown' }), { code: 'SKEIN_IDENTITY_UNAUTHENTICATED' });

  // A KubeConfig with another CA: the TokenReview is never sent; the agent is told the CA is unavailable.
  const other = await clusterCa();
  const sent = api.requests.length;
  const untrusting = new TokenReviewAuthenticator({ kubeConfig: tokenKubeConfig(server, other.caPem, api.token), allowedPrincipals: [agent] });
  await t.rejects(untrusting.authenticate({ bearerToken: 'agent-token' }), { code: 'SKEIN_IDENTITY_CA_UNAVAILABLE' });
  t.equal(api.requests.length, sent, 'nothing reached the stand-in');
  // The controller's own credential refused: also unavailable (not the agent's fault).
  const badCred = new TokenReviewAuthenticator({ kubeConfig: tokenKubeConfig(server, caPem, 'revoked'), allowedPrincipals: [agent] });
  await t.rejects(badCred.authenticate({ bearerToken: 'agent-token' }), { code: 'SKEIN_IDENTITY_CA_UNAVAILABLE', details: { status: 401 } });
});
