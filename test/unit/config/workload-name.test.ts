import t from 'tap';
import { workloadNameOf } from '../../../src/config/kube/translate.js';
import { podTemplateHash, renderKubeState } from '../../../src/lab/kube-state.js';

t.test('the workload is the controller, as Istio names it', async (t) => {
  const rs = (name: string) => [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name, controller: true }];
  t.equal(workloadNameOf('echo-5d8f7b9c4d-x2x9k', { 'pod-template-hash': '5d8f7b9c4d' }, rs('echo-5d8f7b9c4d')), 'echo', 'a Deployment, not its ReplicaSet');
  t.equal(workloadNameOf('my-api-abc-x', { 'pod-template-hash': 'abc' }, rs('my-api-abc')), 'my-api');
  t.equal(workloadNameOf('rs-x', {}, rs('lonely-rs')), 'lonely-rs', 'a ReplicaSet of its own');
  t.equal(workloadNameOf('db-0', {}, [{ kind: 'StatefulSet', name: 'db', controller: true }]), 'db');
  t.equal(workloadNameOf('agent-abcde', {}, [{ kind: 'DaemonSet', name: 'agent' }]), 'agent');
  t.equal(workloadNameOf('backup-28391040-q', {}, [{ kind: 'Job', name: 'backup-28391040', controller: true }]), 'backup', 'a CronJob, not its Job');
  t.equal(workloadNameOf('migrate-2-q', {}, [{ kind: 'Job', name: 'migrate-2', controller: true }]), 'migrate-2');
  t.equal(workloadNameOf('solo', {}, undefined), 'solo', 'a bare pod is its own workload');
  t.equal(workloadNameOf('p', {}, [{ kind: 'ConfigMap', name: 'x' }, { kind: 'StatefulSet', name: 'web', controller: true }]), 'web', 'the controller among owners');
});

t.test('the lab\'s pods are owned as a Deployment\'s are', async (t) => {
  const hash = podTemplateHash('shop', 'echo');
  t.match(hash, /^[bcdfghjklmnpqrstvwxz2456789]{10}$/);
  t.equal(podTemplateHash('shop', 'echo'), hash, 'stable');
  const plan = {
    nodes: [{ name: 'node-a', address: '172.20.0.10', podCIDR: '10.244.1.0/24', labels: {} }],
    pods: [{ name: 'echo-0', namespace: 'shop', uid: 'u', deployment: 'echo', node: 'node-a', ip: '10.244.1.10', labels: { app: 'echo' }, annotations: {}, serviceAccount: 'echo', container: { name: 'echo', image: 'skein/echo', ports: [] } }],
    services: [],
  };
  const files = renderKubeState(plan as never, { namespaces: [], serviceAccounts: [], deployments: [], passthrough: [] } as never, 'now');
  const pod = files['pods.yaml']![0] as { metadata: { labels: Record<string, string>; ownerReferences: { kind: string; name: string }[] } };
  t.equal(pod.metadata.labels['pod-template-hash'], hash);
  t.same(pod.metadata.ownerReferences.map((o) => [o.kind, o.name]), [['ReplicaSet', `echo-${hash}`]]);
  t.equal(workloadNameOf('echo-0', pod.metadata.labels, pod.metadata.ownerReferences), 'echo');
});
