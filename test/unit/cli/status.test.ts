// `skein status` lists routes and backend traffic policies with their state: accepted (with
// which agents ACKed them) or refused (field: reason), read over gRPC GetStatus from a real
// controller over a folder.
import http from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { renderStatus, unservedPods } from '../../../src/cli/status.js';
import { Controller } from '../../../src/controller/controller.js';
import { fetchControllerStatus } from '../../../src/controller/status-client.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { baseCluster, FakeAgent, tempDir, TOKENS, until, writeCluster } from '../controller/helpers.js';
import { btp, httpRoute } from '../controller/traffic-fixtures.js';

t.test('skein status shows routes and backend traffic policies, accepted or refused', async (t) => {
  const dir = tempDir(t, 'status');
  const files = baseCluster();
  files['traffic.yaml'] = [
    httpRoute({ rules: [{ name: 'api', backendRefs: [{ name: 'web', port: 80 }] }] }, 'web-route'),
    httpRoute({ rules: [{ timeouts: { request: '1s', backendRequest: '2s' } }] }, 'slow'),
    btp({ targetRefs: [{ kind: 'Service', name: 'web' }], retry: { attempts: 2 } }, 'web-retries'),
    btp({ targetRefs: [{ kind: 'Service', name: 'gone' }] }, 'orphan'),
  ];
  writeCluster(dir, files);
  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator: BootstrapTokenAuthenticator.fromTokens(TOKENS), configAddress: '127.0.0.1:0' });
  const { configPort } = await c.start();
  t.teardown(() => c.stop());
  const a = new FakeAgent('node-a', `127.0.0.1:${configPort}`);
  t.teardown(() => a.source.stop());
  await a.start();
  await until('node-a ACKed', () => c.status().agents.every((s) => s.ackedVersion === c.index.version));

  const status = await fetchControllerStatus({ address: `127.0.0.1:${configPort}`, token: TOKENS['node-a'] });
  t.same(
    status.traffic?.map((x) => [x.object, x.acked_on, x.agents]),
    [
      ['BackendTrafficPolicy/shop/web-retries', ['node-a'], 1],
      ['HTTPRoute/shop/web-route', ['node-a'], 1],
    ],
  );
  const text = renderStatus(status);
  t.match(text, /ROUTE \/ TRAFFIC POLICY\s+STATE\s+DETAIL/);
  t.match(text, /BackendTrafficPolicy\/shop\/orphan\s+refused\s+spec\.targetRefs\[0\]: Service shop\/gone does not exist/);
  t.match(text, /BackendTrafficPolicy\/shop\/web-retries\s+accepted\s+acked by 1\/1 agents \(node-a\)/);
  t.match(text, /HTTPRoute\/shop\/slow\s+refused\s+spec\.rules\[0\]\.timeouts\.backendRequest: 2s is longer than timeouts\.request 1s/);
  t.match(text, /HTTPRoute\/shop\/web-route\s+accepted/);
});

t.test('skein status lists the pods agents capture but do not serve, with node and reason, asking their admin sockets', async (t) => {
  // The agents' admin API (a unix socket) stood in for by a plain HTTP server answering
  // /workloads in the agent's own shape (agent.ts AgentPodStatus): starting two real agents
  // needs root and BPF; the e2e enrolment-port-held test runs `skein status` against real ones.
  const dir = tempDir(t, 'status-agents');
  const answers: Record<string, unknown> = {
    'node-a': { node: 'node-a', pods: [{ pod: 'shop/web-0', state: 'serving' }, { pod: 'shop/api-0', state: 'pending', code: 'SKEIN_AGENT_IDENTITY_PENDING', error: 'certificate for spiffe://cluster.local/ns/shop/sa/api not issued: timed out' }] },
    'node-b': { node: 'node-b', pods: [{ pod: 'legacy/echo-1', state: 'pending', code: 'SKEIN_CAPTURE_PORT_HELD', error: "port 15001 is already held in the pod's network namespace (EADDRINUSE)" }] },
  };
  const sockets: string[] = [];
  for (const node of Object.keys(answers)) {
    const path = join(dir, `${node}.sock`);
    const server = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(req.url === '/workloads' ? JSON.stringify(answers[node]) : '{}');
    });
    await new Promise<void>((r) => server.listen(path, r));
    t.teardown(() => server.close());
    sockets.push(path);
  }
  const gone = join(dir, 'nobody.sock');
  const pods = await unservedPods([...sockets, gone]);
  t.equal(pods.asked, 2);
  t.same(
    pods.rows.map((p) => [p.pod, p.node, p.state, p.code]),
    [
      ['shop/api-0', 'node-a', 'pending', 'SKEIN_AGENT_IDENTITY_PENDING'],
      ['legacy/echo-1', 'node-b', 'pending', 'SKEIN_CAPTURE_PORT_HELD'],
    ],
    'every pod not served, whatever the reason; served pods left out',
  );
  t.same(pods.unreachable.map((u) => u.socket), [gone], 'an agent that does not answer is named');
  const status = { controller_id: 'c', leader: true, version: '1', objects: 0, resources: 0, refusals: [], agents: [] } as unknown as Parameters<typeof renderStatus>[0];
  const text = renderStatus(status, pods);
  t.match(text, /PENDING \/ REFUSING POD\s+NODE\s+STATE\s+REASON\s+DETAIL/);
  t.match(text, /legacy\/echo-1\s+node-b\s+pending\s+SKEIN_CAPTURE_PORT_HELD\s+port 15001 is already held/);
  t.match(text, /shop\/api-0\s+node-a\s+pending\s+SKEIN_AGENT_IDENTITY_PENDING/);
  t.match(text, /agent at .*nobody\.sock did not answer/);
  t.match(renderStatus(status, { asked: 2, rows: [], unreachable: [] }), /every meshed pod served \(2 agents asked\)/);
  t.notMatch(renderStatus(status), /PENDING/, 'no agent asked: no section');
});
