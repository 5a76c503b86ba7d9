// `skein status` lists routes and backend traffic policies with their state: accepted (with
// which agents ACKed them) or refused (field: reason), read over gRPC GetStatus from a real
// controller over a folder.
import t from 'tap';
import { renderStatus } from '../../../src/cli/status.js';
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
