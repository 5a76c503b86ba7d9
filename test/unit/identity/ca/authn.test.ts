import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import type { Workload } from '../../../../src/config/model.js';
import { bearerTokenOf } from '../../../../src/identity/ca/authn.js';
import { BootstrapTokenAuthenticator, createBootstrapTokens, readBootstrapToken } from '../../../../src/identity/ca/bootstrap-tokens.js';
import { CertificateAuthority } from '../../../../src/identity/ca/ca.js';
import { MemoryRootStore } from '../../../../src/identity/ca/root-store.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { StaticNodeAuthorizer, WorkloadNodeAuthorizer } from '../../../../src/identity/ca/node-authorizer.js';
import { NODE_NAME_EXTRA, TokenReviewAuthenticator } from '../../../../src/identity/ca/token-review.js';
import { id, tempDir } from '../helpers.js';

t.test('bearer token parsing', async (t) => {
  t.equal(bearerTokenOf('Bearer abc'), 'abc');
  t.equal(bearerTokenOf('bearer   abc '), 'abc');
  t.equal(bearerTokenOf('Basic abc'), undefined);
  t.equal(bearerTokenOf(undefined), undefined);
  t.equal(bearerTokenOf('Bearer a b'), undefined);
});

t.test('bootstrap tokens: files 0600, one per node, authenticate to the node', async (t) => {
  const dir = join(tempDir(t, 'boot'), 'tokens');
  const files = await createBootstrapTokens(dir, ['node-a', 'node-b']);
  t.equal((statSync(dir).mode & 0o777).toString(8), '700');
  t.equal((statSync(files['node-a'] as string).mode & 0o777).toString(8), '600');
  const ta = await readBootstrapToken(files['node-a'] as string);
  const tb = await readBootstrapToken(files['node-b'] as string);
  t.match(ta, /^[A-Za-z0-9_-]{43}$/);
  t.not(ta, tb);
  const auth = await BootstrapTokenAuthenticator.fromDirectory(dir);
  t.same(await auth.authenticate({ bearerToken: ta }), { node: 'node-a', method: 'bootstrap-token' });
  t.equal((await auth.authenticate({ bearerToken: tb })).node, 'node-b');
  await t.rejects(auth.authenticate({ bearerToken: 'wrong' }), { code: IdentityCode.Unauthenticated });
  await t.rejects(auth.authenticate({}), { code: IdentityCode.Unauthenticated });

  // A token file others can read is skipped; a new node appears on reload.
  await createBootstrapTokens(dir, ['node-c']);
  chmodSync(join(dir, 'node-b'), 0o644);
  mkdirSync(join(dir, 'subdir'));
  writeFileSync(join(dir, 'Not_A_Node'), 'x', { mode: 0o600 });
  writeFileSync(join(dir, 'node-empty'), '\n', { mode: 0o600 });
  const r = await auth.reload();
  t.same(r.nodes.sort(), ['node-a', 'node-c']);
  t.same(r.skipped, ['node-b']);
  await t.rejects(auth.authenticate({ bearerToken: tb }), { code: IdentityCode.Unauthenticated });
  t.equal((await auth.authenticate({ bearerToken: readFileSync(join(dir, 'node-c'), 'utf8').trim() })).node, 'node-c');

  await t.rejects(createBootstrapTokens(dir, ['../evil']), { code: IdentityCode.BootstrapTokens });
  await t.rejects(readBootstrapToken(join(dir, 'node-empty')), { code: IdentityCode.BootstrapTokens });
  const mem = BootstrapTokenAuthenticator.fromTokens({ n1: 'tok' });
  t.equal((await mem.authenticate({ bearerToken: 'tok' })).node, 'n1');
  t.same((await mem.reload()).nodes, ['n1']);
});

/**
 * A tiny STAND-IN of the API server's TokenReview endpoint (no real API server can run
 * here), over TLS with a certificate from a throw-away cluster CA, as kube-apiserver serves.
 */
async function fakeApiServer(t: { teardown: (fn: () => void) => void }, answer: (token: string, req: IncomingMessage) => { status: number; body: unknown }) {
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: new MemoryRootStore() });
  const serving = await ca.activeAuthority().issueServingCertificate({ sans: ['127.0.0.1'], ttlSeconds: 3600 });
  const seen: Array<{ auth?: string; body: unknown; path?: string }> = [];
  const server = createServer({ cert: serving.certChainPem, key: serving.privateKeyPem }, (req, res) => {
    let data = '';
    req.on('data', (c) => {
      data += c;
    });
    req.on('end', () => {
      const body = JSON.parse(data) as { spec: { token: string } };
      seen.push({ auth: req.headers.authorization, body, path: req.url });
      const a = answer(body.spec.token, req);
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(typeof a.body === 'string' ? a.body : JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, caPem: ca.trustBundlePem().join('') };
}

/** The controller's KubeConfig for that server: its cluster CA and the controller's token. */
function kubeConfig(server: string, caPem: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server, caData: Buffer.from(caPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'u', token }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}

const AGENT = 'system:serviceaccount:skein-system:skein-agent';

t.test('TokenReview authenticator against a stand-in API server', async (t) => {
  const api = await fakeApiServer(t, (token) => {
    const reviewed = (user: object, extra: object = {}) => ({ status: 201, body: { status: { authenticated: true, audiences: ['skein-ca'], user: { ...user, extra } } } });
    switch (token) {
      case 'good':
        return reviewed({ username: AGENT }, { [NODE_NAME_EXTRA]: ['node-a'] });
      case 'other-sa':
        return reviewed({ username: 'system:serviceaccount:default:default' }, { [NODE_NAME_EXTRA]: ['node-a'] });
      case 'unbound':
        return reviewed({ username: AGENT });
      case 'wrong-aud':
        return { status: 201, body: { status: { authenticated: true, audiences: ['api'], user: { username: AGENT } } } };
      case 'boom':
        return { status: 500, body: 'oops' };
      default:
        return { status: 201, body: { status: { authenticated: false, error: 'invalid' } } };
    }
  });
  const auth = new TokenReviewAuthenticator({
    kubeConfig: kubeConfig(api.url, api.caPem, 'controller-token'),
    allowedPrincipals: [AGENT],
    audiences: ['skein-ca'],
  });
  t.same(await auth.authenticate({ bearerToken: 'good' }), { node: 'node-a', method: 'tokenreview', principal: AGENT });
  t.equal(api.seen[0]?.path, '/apis/authentication.k8s.io/v1/tokenreviews');
  t.equal(api.seen[0]?.auth, 'Bearer controller-token');
  t.same(api.seen[0]?.body, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'good', audiences: ['skein-ca'] } });
  await t.rejects(auth.authenticate({ bearerToken: 'nope' }), { code: IdentityCode.Unauthenticated });
  await t.rejects(auth.authenticate({ bearerToken: 'other-sa' }), { code: IdentityCode.Unauthenticated });
  await t.rejects(auth.authenticate({ bearerToken: 'unbound' }), { code: IdentityCode.Unauthenticated });
  await t.rejects(auth.authenticate({ bearerToken: 'wrong-aud' }), { code: IdentityCode.Unauthenticated });
  await t.rejects(auth.authenticate({ bearerToken: 'boom' }), { code: IdentityCode.CaUnavailable });
  await t.rejects(auth.authenticate({}), { code: IdentityCode.Unauthenticated });
  const down = new TokenReviewAuthenticator({ kubeConfig: kubeConfig('https://127.0.0.1:1', api.caPem, 'x'), allowedPrincipals: [AGENT], timeoutMs: 500 });
  await t.rejects(down.authenticate({ bearerToken: 'good' }), { code: IdentityCode.CaUnavailable });
  // Without the cluster CA (the bug this replaced: the reviewer had no CA) the server is refused.
  const seen = api.seen.length;
  const noCa = new KubeConfig();
  noCa.loadFromOptions({ clusters: [{ name: 'c', server: api.url, skipTLSVerify: false }], users: [{ name: 'u', token: 't' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
  await t.rejects(new TokenReviewAuthenticator({ kubeConfig: noCa, allowedPrincipals: [AGENT] }).authenticate({ bearerToken: 'good' }), { code: IdentityCode.CaUnavailable });
  t.equal(api.seen.length, seen, 'no TokenReview sent to a server the cluster CA does not vouch for');
  // An injected reviewer is used instead of HTTP.
  const injected = new TokenReviewAuthenticator({
    allowedPrincipals: [AGENT],
    reviewer: { review: async () => ({ authenticated: true, user: { username: AGENT, extra: { [NODE_NAME_EXTRA]: ['n9'] } } }) },
  });
  t.equal((await injected.authenticate({ bearerToken: 'x' })).node, 'n9');
});

t.test('node authorization', async (t) => {
  const wl = (node: string, ns: string, sa: string, meshEnabled = true): Workload => ({
    uid: `${node}-${ns}-${sa}`,
    namespace: ns,
    name: sa,
    serviceAccount: sa,
    node,
    ips: [],
    labels: {},
    annotations: {},
    identity: id(ns, sa),
    meshEnabled,
    peerAuthentication: 'PERMISSIVE',
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    ready: true,
  });
  let pods = [wl('node-a', 'shop', 'web'), wl('node-b', 'shop', 'db'), wl('node-a', 'legacy', 'app', false)];
  const authz = new WorkloadNodeAuthorizer(() => pods);
  t.equal(authz.mayIssue('node-a', id('shop', 'web')), true);
  t.equal(authz.mayIssue('node-a', id('shop', 'db')), false, 'pod of that SA runs elsewhere');
  t.equal(authz.mayIssue('node-b', id('shop', 'db')), true);
  t.equal(authz.mayIssue('node-a', id('legacy', 'app')), false, 'not in the mesh');
  pods = pods.filter((p) => p.serviceAccount !== 'web');
  t.equal(authz.mayIssue('node-a', id('shop', 'web')), false, 'the pod left: no more issuance');

  const s = new StaticNodeAuthorizer({ n1: [id('a', 'b')] });
  t.equal(s.mayIssue('n1', id('a', 'b')), true);
  t.equal(s.mayIssue('n2', id('a', 'b')), false);
  s.grant('n2', id('a', 'b'));
  s.grant('n2', id('a', 'c'));
  t.equal(s.mayIssue('n2', id('a', 'b')), true);
  s.revoke('n2', id('a', 'b'));
  t.equal(s.mayIssue('n2', id('a', 'b')), false);
  t.equal(s.mayIssue('n2', id('a', 'c')), true);
});
