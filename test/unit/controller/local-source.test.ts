/**
 * The agent's folder mode runs the controller's translation in-process: a folder gives the
 * node exactly what a controller would stream it, policies included, refusals left out.
 */
import t from 'tap';
import type { ControlledMeshSnapshot } from '../../../src/config/policy-model.js';
import { LocalControllerSource } from '../../../src/controller/local-source.js';
import type { Obj } from '../../../src/config/kube/objects.js';
import { baseCluster, tempDir, until, writeCluster, writeYaml } from './helpers.js';

const policy = (name: string, spec: Obj): Obj => ({ apiVersion: 'security.skein.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec });

t.test('a folder through the controller translation: what applies to this node, policies included', async (t) => {
  const dir = tempDir(t, 'local-source');
  const files = baseCluster();
  files['policies.yaml'] = [
    policy('deny-admin', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] }),
    policy('flat', { rules: [{ from: [{ principals: ['x'] }] }] }), // the old shape: refused
  ];
  writeCluster(dir, files);
  const src = new LocalControllerSource({ dir, node: 'node-a', rescanMs: 0 });
  const seen: ControlledMeshSnapshot[] = [];
  await src.start(
    (s) => seen.push(s as ControlledMeshSnapshot),
    () => {},
  );
  t.teardown(() => src.stop());
  const last = () => seen[seen.length - 1] as ControlledMeshSnapshot;
  t.same(last().authorizationPolicies.map((p) => p.name), ['deny-admin'], 'the valid policy is served, the refused one left out');
  t.same(
    last().workloads.map((w) => `${w.namespace}/${w.name}`).sort(),
    ['legacy/api-1', 'shop/web-1'],
    "only node-a's workloads",
  );
  t.equal(last().services.length, 2);
  // A change in the folder is a new snapshot.
  writeYaml(dir, 'policies.yaml', [policy('deny-all', { action: 'DENY', rules: [{}] })]);
  await until('the new policy arrives', () => last().authorizationPolicies.some((p) => p.name === 'deny-all'));
  t.notOk(last().authorizationPolicies.some((p) => p.name === 'deny-admin'), 'the removed one is gone');
});
