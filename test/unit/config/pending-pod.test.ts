/**
 * A pod scheduled on a node whose sandbox is being made has no IP yet, and skein-cni asks its
 * node's agent about it before the IP is published: the translation keeps it (ips empty, the
 * namespace's mesh decision made) so the agent can answer; it is no endpoint of anything. A
 * pod not scheduled yet is nobody's and is left out.
 */
import t from 'tap';
import { translate } from '../../../src/config/kube/translate.js';

const objs = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'skein.io/mesh': 'enabled' } } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'new-0', namespace: 'shop', uid: 'u-new', labels: { app: 'web' } }, spec: { nodeName: 'node-a' }, status: { phase: 'Pending' } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'unscheduled', namespace: 'shop', uid: 'u-uns', labels: { app: 'web' } }, spec: {}, status: { phase: 'Pending' } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-0', namespace: 'shop', uid: 'u-web', labels: { app: 'web' } }, spec: { nodeName: 'node-a' }, status: { phase: 'Running', podIP: '10.244.1.10' } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
].map((obj, doc) => ({ file: 'state.yaml', doc, obj }));

t.test('a scheduled pod without an IP is a workload of its node, with no address and no endpoint', async (t) => {
  const snap = translate(objs, '1');
  const byName = new Map(snap.workloads.map((w) => [w.name, w]));
  t.match(byName.get('new-0'), { uid: 'u-new', node: 'node-a', ips: [], meshEnabled: true }, 'kept: its node agent decides its capture at CNI ADD');
  t.notOk(byName.has('unscheduled'), 'a pod on no node is left out');
  t.same(byName.get('web-0')?.ips, ['10.244.1.10']);
  const svc = snap.services.find((s) => s.name === 'web')!;
  t.same(
    svc.endpoints.map((e) => e.ip),
    ['10.244.1.10'],
    'only the pod with an IP is an endpoint',
  );
});
