/**
 * `skein authz check`: a folder through the controller's translation and index, the decision
 * through the agent's policy engine; the exit code says allowed (0) or denied (1).
 */
import t from 'tap';
import { authzCommand } from '../../../src/cli/authz.js';
import type { Obj } from '../../../src/config/kube/objects.js';
import { baseCluster, tempDir, writeCluster } from '../controller/helpers.js';

const policy = (name: string, namespace: string, spec: Obj): Obj => ({ apiVersion: 'security.skein.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec });

async function check(dir: string, args: string[]): Promise<{ code: number; out: Record<string, unknown> }> {
  let text = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => {
    text += s;
    return true;
  }) as typeof process.stdout.write;
  try {
    const code = await authzCommand(['check', '--folder', dir, '--json', ...args]);
    return { code, out: JSON.parse(text) as Record<string, unknown> };
  } finally {
    process.stdout.write = write;
  }
}

t.test('which policies apply, which rule decides, and the decision', async (t) => {
  const dir = tempDir(t, 'authz');
  const files = baseCluster();
  files['policies.yaml'] = [
    policy('deny-admin', 'shop', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] }),
    policy('only-shop', 'shop', { rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] }),
    policy('mesh-audit', 'skein-system', { action: 'AUDIT', rules: [{}] }),
  ];
  writeCluster(dir, files);
  const admin = await check(dir, ['--from', 'shop/web-1', '--to', 'shop/web-2:8080', '--path', '/admin/x']);
  t.equal(admin.code, 1);
  t.match(admin.out, { decision: 'DENY', decidedBy: { policy: 'shop/deny-admin', rule: 0 }, kind: 'http' });
  t.same(
    (admin.out.policies as { name: string }[]).map((p) => p.name),
    ['shop/deny-admin', 'shop/only-shop', 'skein-system/mesh-audit'],
    'namespace, selector and mesh-wide policies',
  );
  t.match(admin.out.audits, [{ policy: 'skein-system/mesh-audit', action: 'AUDIT' }]);
  const ok = await check(dir, ['--from', 'shop/web-1', '--to', 'shop/web-2:8080', '--path', '/']);
  t.match(ok, { code: 0, out: { decision: 'ALLOW', decidedBy: { policy: 'shop/only-shop' } } });
  const legacy = await check(dir, ['--from', 'legacy/api-1', '--to', 'shop/web-2:7070']);
  t.match(legacy, { code: 1, out: { decision: 'DENY', kind: 'tcp' } }, 'a TCP connection from another namespace: the L7 DENY fails safe');
});
