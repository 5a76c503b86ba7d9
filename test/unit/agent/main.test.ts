import t from 'tap';
import { parseHostPort } from '../../../src/agent/admin.js';
import { runAgent } from '../../../src/agent/main.js';

t.test('the agent refuses an incomplete command line before touching anything', async (t) => {
  const saved = process.env.NODE_NAME;
  delete process.env.NODE_NAME;
  t.teardown(() => {
    if (saved !== undefined) process.env.NODE_NAME = saved;
  });
  await t.rejects(runAgent([]), { code: 'SKEIN_AGENT_USAGE', message: /--node is required/ });
  await t.rejects(runAgent(['--node', 'n1']), { code: 'SKEIN_AGENT_USAGE', message: /exactly one of --controller and --config-folder/ });
  await t.rejects(runAgent(['--node', 'n1', '--controller', '127.0.0.1:15010', '--config-folder', '/tmp']), {
    code: 'SKEIN_AGENT_USAGE',
    message: /exactly one of/,
  });
  for (const flag of ['--max-connections', '--max-pod-connects', '--max-tunnel-streams', '--max-tunnel-streams-per-peer', '--max-outbound-streams', '--h2-reset-budget', '--tunnel-reset-budget']) {
    for (const bad of ['0', '-5', '1.5', 'lots', '']) {
      await t.rejects(runAgent(['--node', 'n1', '--config-folder', '/tmp', `${flag}=${bad}`]), {
        code: 'SKEIN_AGENT_USAGE',
        message: new RegExp(`${flag} must be a whole number of at least 1`),
      });
    }
  }
  await t.rejects(runAgent(['--node', 'n1', '--config-folder', '/tmp', '--max-pod-captured-connections=-1']), { code: 'SKEIN_AGENT_USAGE', message: /--max-pod-captured-connections must be a whole number of at least 0/ });
  // 0 waiting is allowed: connects beyond those in progress fail at once.
  await t.rejects(runAgent(['--node', 'n1', '--config-folder', '/tmp', '--max-pod-connects-queued=-1']), { code: 'SKEIN_AGENT_USAGE', message: /--max-pod-connects-queued must be a whole number of at least 0/ });
  await t.rejects(runAgent(['--node', 'n1', '--config-folder', '/tmp', '--request-metrics', 'maybe']), { code: 'SKEIN_AGENT_USAGE', message: /--request-metrics must be on or off/ });
  await t.rejects(runAgent(['--node', 'n1', '--config-folder', '/tmp', '--cni-pod-wait', 'soon']), { code: 'SKEIN_AGENT_USAGE', message: /--cni-pod-wait must be seconds/ });
});

t.test('admin, metrics and readiness addresses', async (t) => {
  t.same(parseHostPort('127.0.0.1:15000', '--admin'), { host: '127.0.0.1', port: 15000 });
  t.same(parseHostPort('[::1]:15000', '--admin'), { host: '::1', port: 15000 });
  t.same(parseHostPort(':15020', '--metrics'), { host: '0.0.0.0', port: 15020 }, 'no host: every address');
  t.throws(() => parseHostPort('15020', '--metrics'), /--metrics must be HOST:PORT/);
  t.throws(() => parseHostPort('0.0.0.0:70000', '--ready'), /--ready must be HOST:PORT/);
});
