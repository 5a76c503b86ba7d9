/**
 * PeerAuthentication as Istio reads it: workload over namespace over mesh, portLevelMtls per
 * port, and the skein.io/peer-authentication annotation only when no object applies.
 */
import t from 'tap';
import type { Workload } from '../../../src/config/model.js';
import type { PeerAuthenticationPolicy } from '../../../src/config/policy-model.js';
import { mtlsModeFor, peerAuthenticationFor } from '../../../src/policy/peer-authentication.js';

const w = (annotation: 'STRICT' | 'PERMISSIVE' = 'STRICT') =>
  ({ namespace: 'shop', name: 'echo-0', labels: { app: 'echo' }, peerAuthentication: annotation }) as unknown as Workload;
const pa = (name: string, mode: 'STRICT' | 'PERMISSIVE', extra: Partial<PeerAuthenticationPolicy> = {}): PeerAuthenticationPolicy => ({
  namespace: 'shop',
  name,
  mode,
  portLevelMtls: {},
  ...extra,
});
const mesh = (mode: 'STRICT' | 'PERMISSIVE') => pa('default', mode, { namespace: 'skein-system', meshWide: true });

t.test('no object: the annotation decides (default STRICT)', async (t) => {
  t.equal(mtlsModeFor(w(), 80, []), 'STRICT');
  t.equal(mtlsModeFor(w('PERMISSIVE'), 80, []), 'PERMISSIVE');
});

t.test('the most specific scope wins', async (t) => {
  t.equal(mtlsModeFor(w('PERMISSIVE'), 80, [mesh('STRICT')]), 'STRICT', 'a mesh-wide object outranks the annotation');
  t.equal(mtlsModeFor(w(), 80, [mesh('STRICT'), pa('ns', 'PERMISSIVE')]), 'PERMISSIVE', 'namespace over mesh');
  t.equal(mtlsModeFor(w(), 80, [pa('ns', 'PERMISSIVE'), pa('echo', 'STRICT', { selector: { matchLabels: { app: 'echo' } } })]), 'STRICT', 'workload over namespace');
  t.equal(mtlsModeFor(w(), 80, [pa('web', 'PERMISSIVE', { selector: { matchLabels: { app: 'web' } } })]), 'STRICT', "another workload's policy does not apply");
  t.equal(mtlsModeFor(w(), 80, [{ ...pa('other', 'PERMISSIVE'), namespace: 'jobs' }]), 'STRICT', "another namespace's policy does not apply");
  t.equal(peerAuthenticationFor(w(), [pa('b', 'STRICT'), pa('a', 'PERMISSIVE')])?.policy.name, 'a', 'one scope, several policies: the first by name');
});

t.test('portLevelMtls overrides the mode on its port only', async (t) => {
  const p = pa('echo', 'STRICT', { selector: { matchLabels: { app: 'echo' } }, portLevelMtls: { '8080': 'PERMISSIVE' } });
  t.equal(mtlsModeFor(w(), 8080, [p]), 'PERMISSIVE');
  t.equal(mtlsModeFor(w(), 7070, [p]), 'STRICT');
});
