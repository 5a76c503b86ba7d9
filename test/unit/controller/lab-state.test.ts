// The lab's own state folder (rendered by src/lab from deploy/local/demo.yaml, as `skein
// lab up` writes it) read by the controller: nothing refused, each node's agent view holds
// its pods only, the meshed namespace's pods are meshed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Controller } from '../../../src/controller/controller.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { repoPath } from '../../../src/paths.js';
import { renderKubeState, toMultiDocYaml } from '../../../src/lab/kube-state.js';
import { planLab } from '../../../src/lab/plan.js';
import { loadScenario } from '../../../src/lab/scenario.js';
import { FakeAgent, tempDir } from './helpers.js';

t.test('the lab state folder of the demo scenario', async (t) => {
  const sc = loadScenario(repoPath('deploy', 'local', 'demo.yaml'));
  const plan = planLab(sc, `t${process.pid % 10000}`);
  const dir = join(tempDir(t, 'lab'), 'state');
  mkdirSync(dir);
  for (const [file, objs] of Object.entries(renderKubeState(plan, sc, '2026-01-01T00:00:00Z'))) {
    writeFileSync(join(dir, file), toMultiDocYaml(objs));
  }
  const nodes = plan.nodes.map((n) => n.name);
  const tokens = Object.fromEntries(nodes.map((n) => [n, `tok-${n}`]));
  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator: BootstrapTokenAuthenticator.fromTokens(tokens), configAddress: '127.0.0.1:0' });
  const { configPort } = await c.start();
  t.teardown(() => c.stop());
  t.same(c.status().refusals, [], 'nothing refused');
  for (const n of nodes) {
    const agent = new FakeAgent(n, `127.0.0.1:${configPort}`, { token: tokens[n] });
    t.teardown(() => agent.source.stop());
    await agent.start();
    const mine = plan.pods.filter((p) => p.node === n).map((p) => `${p.namespace}/${p.name}`).sort();
    t.same(agent.workloadNames(), mine, `${n} holds its ${mine.length} pods`);
    const shop = agent.snapshot().workloads.filter((w) => w.namespace === 'shop');
    t.ok(shop.length > 0 && shop.every((w) => w.meshEnabled), 'shop pods meshed');
    t.ok(agent.snapshot().workloads.every((w) => w.netnsPath === undefined), 'no netns in config: each agent finds its pods itself');
    t.equal(agent.snapshot().services.length, plan.services.length);
  }
});
