/**
 * The control plane in the lab: the controller watches the lab's state folder and streams
 * config to the agents. Scaling while traffic flows loses nothing; the agents keep serving
 * while the controller is away and resynchronise when it returns.
 */
import t from 'tap';
import { startControlPlane } from '../../../src/lab/mesh.js';
import { annotateNamespace, scaleDeployment } from '../../../src/lab/mutate.js';
import { writeRecord } from '../../../src/lab/registry.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

interface ConfigDump {
  snapshot: {
    version: string;
    services: { namespace: string; name: string; endpoints: { ip: string }[] }[];
    workloads: { namespace: string; name: string; peerAuthentication: string }[];
  } | null;
}

async function endpointsSeen(rec: Parameters<typeof agentGet>[0], node: string): Promise<number> {
  const d = await agentGet<ConfigDump>(rec, node, '/config_dump');
  return d.snapshot?.services.find((s) => s.namespace === 'shop' && s.name === 'echo')?.endpoints.length ?? 0;
}

t.test('control plane in the lab', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });

  await t.test('scale up and down under traffic: new endpoints within 1 s, none lost', async (t) => {
    const load = client(rec, 'shop/client-0', ['--protocol', 'h2c', '--target', 'echo.shop:8081', '--rate', '50', '--count', '500', '--duration', '12']);
    await new Promise((r) => setTimeout(r, 1000));
    const up = await scaleDeployment(rec, 'shop/echo', 4);
    const t0 = Date.now();
    const seenMs = await waitUntil(async () => (await endpointsSeen(rec, 'node-a')) === 4, 5000, 25);
    t.ok(seenMs <= 1000, `node-a's agent had the 2 new endpoints ${seenMs} ms after the change`);
    await new Promise((r) => setTimeout(r, 3000 - (Date.now() - t0)));
    const down = await scaleDeployment(rec, 'shop/echo', 1, { graceMs: 1000 });
    const s = await load;
    t.equal(s.failed, 0, `zero failed requests while scaling ${JSON.stringify(s.errors)}`);
    for (const p of up.added) t.ok((s.byPod[`shop/${p.name}`] ?? 0) > 0, `new pod ${p.name} got traffic`);
    t.same(
      down.removed.map((p) => p.name).sort(),
      ['echo-1', 'echo-2', 'echo-3'],
    );
    t.equal(await endpointsSeen(rec, 'node-a'), 1, 'the agent dropped the removed endpoints');
    const after = await client(rec, 'shop/client-0', ['--protocol', 'h2c', '--target', 'echo.shop:8081', '--count', '30']);
    t.same(Object.keys(after.byPod), ['shop/echo-0'], 'removed pods get no traffic after their removal');
  });

  await t.test('controller away for 30 s: traffic continues; back: agents resync', async (t) => {
    const ctl = rec.processes.find((p) => p.kind === 'controller')!;
    const versionBefore = (await agentGet<ConfigDump>(rec, 'node-b', '/config_dump')).snapshot?.version;
    const load = client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--rate', '20', '--count', '700', '--duration', '34'], 60_000);
    process.kill(ctl.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 30_000));
    // A change made while the controller is away reaches the agents once it is back.
    await annotateNamespace(rec, 'legacy', ['skein.io/peer-authentication=PERMISSIVE']);
    const back = await startControlPlane(rec, { restart: true });
    rec.processes = rec.processes.filter((p) => p !== ctl).concat(back);
    writeRecord(rec);
    const s = await load;
    t.equal(s.failed, 0, `no failed request while the controller was away ${JSON.stringify(s.errors)}`);
    t.ok(s.ok >= 600, `${s.ok} requests served`);
    const sawChange = async (node: string) => {
      const d = await agentGet<ConfigDump>(rec, node, '/config_dump');
      return (d.snapshot?.workloads ?? []).some((w) => w.namespace === 'legacy' && w.peerAuthentication === 'PERMISSIVE');
    };
    const resyncMs = await waitUntil(() => sawChange('node-b'), 30_000, 100);
    t.pass(`node-b resynchronised ${resyncMs} ms after the controller came back, with the change made while it was away`);
    t.not((await agentGet<ConfigDump>(rec, 'node-b', '/config_dump')).snapshot?.version, versionBefore, 'node-b serves a newer version');
    const after = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '10']);
    t.equal(after.ok, 10, 'traffic after the resync');
  });
});
