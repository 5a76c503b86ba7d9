/**
 * skein-cni's calls as the agent reads them: a well-formed ADD is parsed (pod, netns, the
 * IPs of prevResult); anything malformed — env, CNI_ARGS, stdin, prevResult — is refused with
 * SKEIN_AGENT_CNI_BAD_REQUEST and the CNI spec's error code, and answered as a CNI error
 * result on skein-cni's stdout with exit 1.
 */
import t, { type Test } from 'tap';
import { answerCniRequest } from '../../../src/agent/cni-server.js';
import { type CniCall, CniError, CniErrorCode, parseCniArgs, parseCniCall, passThroughAnswer } from '../../../src/agent/cni-request.js';
import { silentLogger } from '../../../src/telemetry/log.js';

const prevResult = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: '/run/netns/p' }],
  ips: [{ interface: 0, address: '10.244.1.10/24', gateway: '10.244.1.1' }],
};
const config = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'skein-cni', prevResult, ...extra });
const request = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    command: 'ADD',
    containerId: 'a1b2c3',
    netns: '/run/netns/cni-1234',
    ifName: 'eth0',
    args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=echo-0;K8S_POD_UID=0f0e-11;K8S_POD_INFRA_CONTAINER_ID=a1b2c3',
    path: '/opt/cni/bin',
    stdin: config(),
    ...over,
  });

function refused(t: Test, raw: string, cniCode: number, field: string | RegExp): void {
  try {
    parseCniCall(raw);
    t.fail(`accepted ${raw.slice(0, 120)}`);
  } catch (err) {
    t.ok(err instanceof CniError, 'a CniError');
    t.equal((err as CniError).code, 'SKEIN_AGENT_CNI_BAD_REQUEST');
    t.equal((err as CniError).cniCode, cniCode, `CNI code ${cniCode}`);
    t.match((err as CniError).details, { field }, `names the field (${(err as CniError).message})`);
  }
}

t.test('a well-formed ADD', async (t) => {
  const call = parseCniCall(request());
  t.match(call, {
    command: 'ADD',
    containerId: 'a1b2c3',
    netns: '/run/netns/cni-1234',
    ifName: 'eth0',
    pod: { namespace: 'shop', name: 'echo-0', uid: '0f0e-11' },
    cniVersion: '1.0.0',
    network: 'k8s-pod-network',
    prevIps: ['10.244.1.10'],
  });
  const out = passThroughAnswer(call);
  t.equal(out.exitCode, 0);
  t.same(JSON.parse(out.stdout), prevResult, 'ADD passes prevResult through unchanged');
});

t.test('0.4.0 results and a DEL without netns or pod are accepted', async (t) => {
  const call = parseCniCall(request({ stdin: config({ cniVersion: '0.4.0', prevResult: { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.1.0.5/16' }] } }) }));
  t.same(call.prevIps, ['10.1.0.5']);
  const del = parseCniCall(request({ command: 'DEL', netns: '', args: '', stdin: JSON.stringify({ cniVersion: '1.0.0', name: 'n' }) }));
  t.equal(del.command, 'DEL');
  t.equal(del.netns, undefined);
  t.equal(del.pod, undefined);
});

t.test('malformed requests are refused with the CNI code and the field', async (t) => {
  refused(t, 'not json', CniErrorCode.DecodeFailure, 'request');
  refused(t, '[1]', CniErrorCode.DecodeFailure, 'request');
  refused(t, request({ command: 'ADDX' }), CniErrorCode.InvalidEnvironment, 'CNI_COMMAND');
  refused(t, request({ command: 5 }), CniErrorCode.InvalidEnvironment, 'command');
  refused(t, request({ containerId: '' }), CniErrorCode.InvalidEnvironment, 'CNI_CONTAINERID');
  refused(t, request({ containerId: '../x' }), CniErrorCode.InvalidEnvironment, 'CNI_CONTAINERID');
  refused(t, request({ ifName: '' }), CniErrorCode.InvalidEnvironment, 'CNI_IFNAME');
  refused(t, request({ ifName: 'a-very-long-interface-name' }), CniErrorCode.InvalidEnvironment, 'CNI_IFNAME');
  refused(t, request({ netns: 'relative/ns' }), CniErrorCode.InvalidEnvironment, 'CNI_NETNS');
  refused(t, request({ netns: null }), CniErrorCode.InvalidEnvironment, 'CNI_NETNS');
  refused(t, request({ args: 'K8S_POD_NAMESPACE=shop' }), CniErrorCode.InvalidEnvironment, 'CNI_ARGS');
  refused(t, request({ args: 'K8S_POD_NAMESPACE=Shop!;K8S_POD_NAME=x' }), CniErrorCode.InvalidEnvironment, 'CNI_ARGS');
  refused(t, request({ args: 'IgnoreUnknown=1' }), CniErrorCode.InvalidEnvironment, 'CNI_ARGS');
  refused(t, request({ args: 'novalue;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b' }), CniErrorCode.InvalidEnvironment, 'CNI_ARGS');
  refused(t, request({ stdin: '{' }), CniErrorCode.DecodeFailure, 'stdin');
  refused(t, request({ stdin: '"str"' }), CniErrorCode.DecodeFailure, 'stdin');
  refused(t, request({ stdin: config({ cniVersion: '9.9.9' }) }), CniErrorCode.IncompatibleVersion, 'cniVersion');
  refused(t, request({ stdin: config({ name: '' }) }), CniErrorCode.InvalidConfig, 'name');
  refused(t, request({ stdin: JSON.stringify({ cniVersion: '1.0.0', name: 'n' }) }), CniErrorCode.InvalidConfig, 'prevResult');
  refused(t, request({ stdin: config({ prevResult: [] }) }), CniErrorCode.InvalidConfig, 'prevResult');
  refused(t, request({ stdin: config({ prevResult: { ips: {} } }) }), CniErrorCode.InvalidConfig, 'prevResult.ips');
  refused(t, request({ stdin: config({ prevResult: { ips: [{ address: '10.0.0.1' }] } }) }), CniErrorCode.InvalidConfig, 'prevResult.ips[0].address');
  refused(t, request({ stdin: config({ prevResult: { ips: [{ address: 'x.y/24' }] } }) }), CniErrorCode.InvalidConfig, 'prevResult.ips[0].address');
});

t.test('CNI_ARGS', async (t) => {
  t.same(parseCniArgs(''), {});
  t.same(parseCniArgs('A=1;B=x=y;'), { A: '1', B: 'x=y' });
  t.throws(() => parseCniArgs('=1'));
});

t.test('answers: errors as CNI error results, DEL never fails, VERSION without a handler', async (t) => {
  const log = silentLogger();
  const never = async (): Promise<never> => {
    throw new Error('not called');
  };
  const bad = await answerCniRequest(request({ netns: 'rel' }), never, 1000, log);
  t.equal(bad.exitCode, 1, 'exit 1');
  const body = JSON.parse(bad.stdout) as { cniVersion: string; code: number; msg: string; details: string };
  t.equal(body.cniVersion, '1.0.0');
  t.equal(body.code, CniErrorCode.InvalidEnvironment);
  t.match(body.msg, /CNI_NETNS/);
  t.match(body.details, /^SKEIN_AGENT_CNI_BAD_REQUEST/);

  const version = await answerCniRequest(JSON.stringify({ command: 'VERSION', stdin: '' }), never, 1000, log);
  t.same(JSON.parse(version.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);

  const failingDel = await answerCniRequest(request({ command: 'DEL' }), async () => {
    throw new Error('boom');
  }, 1000, log);
  t.same(failingDel, { exitCode: 0, stdout: '' }, 'a DEL the agent fails still succeeds (idempotent teardown)');

  const slow = await answerCniRequest(request(), (c: CniCall) => new Promise((r) => setTimeout(() => r(passThroughAnswer(c)), 500)), 50, log);
  t.equal(slow.exitCode, 1, 'an ADD not finished in time fails');
  t.equal(JSON.parse(slow.stdout).code, CniErrorCode.TryAgainLater, 'with "try again later"');
});
