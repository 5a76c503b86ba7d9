/**
 * The integrity matrix (issue 17): every request shape users send must arrive at the app byte
 * for byte, across nodes (mTLS tunnel) and on one node, to the pod IP and through the Service.
 * HTTP/1.0 and 1.1 with and without bodies (Content-Length, chunked), h2c and gRPC messages,
 * and raw TCP, each over body sizes 0-300 B one by one and every power of two ± 1 up to 1 MiB;
 * the lab's echo app reports method, path and the body's sha256 (TCP: the bytes echoed back).
 * The client runs inside an enrolled pod (test/e2e/support/integrity-client.ts), so the agent
 * captures it as it would any app.
 */
import { join } from 'node:path';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { matrixCount } from '../support/integrity-client.js';
import { isRoot, repo, startLab } from '../support/lab.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const runner = join(repo, 'test', 'e2e', 'support', 'integrity-client.ts');

t.test('integrity matrix through the mesh', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const from = 'shop/client-0'; // node-a
  const pod = (name: string) => rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === name)!;
  const vip = rec.plan.services.find((s) => s.namespace === 'shop' && s.name === 'echo')!.vip;
  const targets = [
    { where: 'across nodes, pod IP', host: pod('echo-1').ip, ports: { http1: 8080, h2c: 8080, grpc: 9090, tcp: 7070 } },
    { where: 'same node, pod IP', host: pod('echo-0').ip, ports: { http1: 8080, h2c: 8080, grpc: 9090, tcp: 7070 } },
    { where: 'Service VIP (both nodes)', host: vip, ports: { http1: 80, h2c: 8081, grpc: 9090, tcp: 7070 } },
  ];
  for (const target of targets) {
    for (const protocol of ['http1', 'h2c', 'grpc', 'tcp'] as const) {
      const port = target.ports[protocol];
      const r = await labExecCaptured(rec, from, [process.execPath, '--import', 'tsx', runner, protocol, target.host, String(port)], 240_000);
      const line = r.stdout.trim().split('\n').pop() ?? '';
      let summary: { checked: number; failed: number; failures: string[] };
      try {
        summary = JSON.parse(line);
      } catch {
        t.fail(`${target.where} ${protocol}: no summary (exit ${r.code}): ${r.stderr.slice(0, 500)}`);
        continue;
      }
      const expected = matrixCount(protocol);
      t.equal(summary.checked, expected, `${target.where} ${protocol}: ${summary.checked} requests answered`);
      t.equal(summary.failed, 0, `${target.where} ${protocol} (${target.host}:${port}): every one byte for byte ${JSON.stringify(summary.failures)}`);
    }
  }
});
