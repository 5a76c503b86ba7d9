/**
 * Istio's metrics, scraped for real: a lab with `--prometheus` (Debian's prometheus scraping
 * every agent and the controller every second), traffic from shop/client-0 (node-a) to the
 * echo Service (pods on both nodes), then PromQL over Prometheus' HTTP API: the sums equal
 * what was sent, at both reporters, for HTTP, gRPC and TCP (bytes too), with the workloads,
 * principals, response codes and mutual_tls on the labels; a request an AuthorizationPolicy
 * denies shows up with its 403 and the RBAC flag.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { labStatus } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const execFileP = promisify(execFile);
const hasPrometheus = ['/usr/bin/prometheus', '/usr/local/bin/prometheus'].some((p) => existsSync(p));
const opts = () => ({ skip: !isRoot() ? 'needs root (real BPF, netns, cgroups)' : !hasPrometheus ? 'needs Debian\'s prometheus (make deps)' : false });

const SVC = 'echo.shop.svc.cluster.local';
const CLIENT_ID = 'spiffe://cluster.local/ns/shop/sa/client';
const ECHO_ID = 'spiffe://cluster.local/ns/shop/sa/echo';
const from = 'shop/client-0';

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(rec: LabRecord, promql: string): Promise<Sample[]> {
  const r = await fetch(`${rec.prometheus!.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await r.json()) as { status: string; data: { result: Sample[] }; error?: string };
  if (body.status !== 'success') throw new Error(`PromQL ${promql}: ${body.error}`);
  return body.data.result;
}

/** The value of a scalar-ish query (a sum); 0 when it has no series yet. */
async function value(rec: LabRecord, promql: string): Promise<number> {
  const r = await query(rec, promql);
  return r.length ? Number(r[0]!.value[1]) : 0;
}

/** Polls (bounded) until `promql` equals `want`; returns the last value seen. */
async function settle(rec: LabRecord, promql: string, want: number, timeoutMs = 20_000): Promise<number> {
  let last = Number.NaN;
  try {
    await waitUntil(
      async () => {
        last = await value(rec, promql);
        return last === want;
      },
      timeoutMs,
      250,
    );
  } catch {
    // the caller's assertion says what was seen
  }
  return last;
}

t.test('Istio metrics in a real Prometheus, at both reporters', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, prometheus: true });
  t.match(rec.prometheus?.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'on the host loopback');
  t.equal(labStatus(rec).prometheus, rec.prometheus!.url, 'lab status says where it is');
  const cli = await execFileP(process.execPath, [join(repo, 'bin', 'skein.js'), 'lab', 'status', '--lab', rec.id]);
  t.match(cli.stdout, new RegExp(`prometheus: ${rec.prometheus!.url}`));

  await t.test('Prometheus scrapes every agent and the controller', async (t) => {
    const up = await settle(rec, 'sum(up{job=~"skein-agent|skein-controller"})', 3);
    t.equal(up, 3, 'two agents and the controller are up');
  });

  const N = 40;
  await t.test(`${N} HTTP requests: counted once at each reporter`, async (t) => {
    const r = await client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', String(N), '--size', '100']);
    t.equal(r.ok, N, JSON.stringify(r.errors));
    t.ok(Object.keys(r.byNode).length === 2, `answered from both nodes ${JSON.stringify(r.byNode)}`);
    const dst = `sum(istio_requests_total{reporter="destination",destination_service="${SVC}",request_protocol="http"})`;
    const src = `sum(istio_requests_total{reporter="source",destination_service="${SVC}",request_protocol="http"})`;
    t.equal(await settle(rec, dst, N), N, 'reporter destination');
    t.equal(await settle(rec, src, N), N, 'reporter source');
    const rows = await query(rec, `sum by (reporter, source_workload, source_workload_namespace, source_principal, source_app, destination_workload, destination_workload_namespace, destination_principal, destination_app, destination_service_name, destination_service_namespace, response_code, response_flags, connection_security_policy) (istio_requests_total{destination_service="${SVC}",request_protocol="http"})`);
    const want = {
      source_workload_namespace: 'shop',
        source_principal: CLIENT_ID,
        source_app: 'client',
        destination_workload: 'echo',
        destination_workload_namespace: 'shop',
        destination_principal: ECHO_ID,
        destination_app: 'echo',
        destination_service_name: 'echo',
        destination_service_namespace: 'shop',
        response_code: '200',
        response_flags: '-',
      connection_security_policy: 'mutual_tls',
    };
    const source = rows.filter((r) => r.metric.reporter === 'source');
    t.equal(source.length, 1, `reporter source: one label set ${JSON.stringify(source.map((r) => r.metric))}`);
    t.match(source[0]?.metric, { ...want, source_workload: 'client' }, 'reporter source: both workloads named (the remote one by its Service endpoint)');
    const destination = rows.filter((r) => r.metric.reporter === 'destination');
    // Principals, namespaces, the destination side, codes and mTLS hold on every series.
    for (const row of destination) t.match(row.metric, { ...want, source_app: row.metric.source_workload === 'client' ? 'client' : 'unknown' }, `reporter destination (${row.metric.source_workload})`);
    t.ok(destination.some((r) => r.metric.source_workload === 'client'), 'reporter destination: the source workload named on the same node');
    // Another node's agent holds only its own pods and the client is no Service's endpoint: the
    // source agent's peer metadata (skein-peer) names it; namespace and principal stay the
    // authenticated ones.
    t.same([...new Set(destination.map((r) => r.metric.source_workload))], ['client'], 'reporter destination: the remote source workload named too');
    t.ok(destination.every((r) => r.metric.source_app === 'client'), 'and its app label');
    // Body sizes at the destination (the source's come with the forwarders' counts).
    t.equal(await value(rec, `sum(istio_request_bytes_count{reporter="destination",destination_service="${SVC}",request_protocol="http"})`), N);
    t.equal(await value(rec, `sum(istio_request_bytes_sum{reporter="destination",destination_service="${SVC}",request_protocol="http"})`), N * 100, 'request bodies: 100 bytes each');
    t.ok((await value(rec, `sum(istio_response_bytes_sum{reporter="destination",destination_service="${SVC}",request_protocol="http"})`)) >= N * 100, 'response bodies carry the echo');
    t.equal(await value(rec, `sum(istio_request_duration_milliseconds_count{reporter="destination",destination_service="${SVC}",request_protocol="http"})`), N, 'a duration per request');
  });

  await t.test(`${N} gRPC requests`, async (t) => {
    const r = await client(rec, from, ['--protocol', 'grpc', '--target', 'echo.shop:9090', '--count', String(N)]);
    t.equal(r.ok, N, JSON.stringify(r.errors));
    for (const reporter of ['destination', 'source']) {
      const q = `sum(istio_requests_total{reporter="${reporter}",destination_service="${SVC}",request_protocol="grpc",grpc_response_status="0",response_code="200"})`;
      t.equal(await settle(rec, q, N), N, `reporter ${reporter}: gRPC OK counted`);
    }
  });

  const K = 5;
  const SIZE = 10_000;
  await t.test(`${K} TCP connections of known size`, async (t) => {
    const r = await client(rec, from, ['--protocol', 'tcp', '--target', 'echo.shop:7070', '--count', String(K), '--size', String(SIZE)]);
    t.equal(r.ok, K, JSON.stringify(r.errors));
    const sent = K * (7 + SIZE); // WHOAMI\n and the body, from the client
    for (const reporter of ['destination', 'source']) {
      const base = `{reporter="${reporter}",destination_service="${SVC}",request_protocol="tcp",source_principal="${CLIENT_ID}",destination_workload="echo",connection_security_policy="mutual_tls"}`;
      t.equal(await settle(rec, `sum(istio_tcp_connections_closed_total${base})`, K), K, `reporter ${reporter}: connections closed`);
      t.equal(await value(rec, `sum(istio_tcp_connections_opened_total${base})`), K, `reporter ${reporter}: connections opened`);
      t.equal(await value(rec, `sum(istio_tcp_received_bytes_total${base})`), sent, `reporter ${reporter}: bytes from the client`);
      const back = await value(rec, `sum(istio_tcp_sent_bytes_total${base})`);
      t.ok(back > K * SIZE && back < K * (SIZE + 200), `reporter ${reporter}: bytes back to the client (the echo and a WHOAMI line): ${back}`);
    }
  });

  await t.test('a request denied by AuthorizationPolicy: 403 and the RBAC flag', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-metrics-'));
    const file = join(dir, 'deny.yaml');
    writeFileSync(
      file,
      JSON.stringify({
        apiVersion: 'security.skein.io/v1alpha1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'deny-forbidden', namespace: 'shop' },
        spec: { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/forbidden'] } }] }] },
      }),
    );
    await execFileP(process.execPath, [join(repo, 'bin', 'skein.js'), 'lab', 'apply', '-f', file, '--lab', rec.id]);
    await waitUntil(async () => {
      for (const node of ['node-a', 'node-b']) {
        const d = await agentGet<{ snapshot: { authorizationPolicies?: { name: string }[] } | null }>(rec, node, '/config_dump');
        if (!(d.snapshot?.authorizationPolicies ?? []).some((p) => p.name === 'deny-forbidden')) return false;
      }
      return true;
    }, 15_000);
    const D = 6;
    const r = await client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--path', '/forbidden', '--count', String(D), '--timeout', '5']);
    t.equal(r.ok, 0, `all refused ${JSON.stringify(r.errors)}`);
    const dst = `sum(istio_requests_total{reporter="destination",destination_service="${SVC}",response_code="403",response_flags="RBAC",source_principal="${CLIENT_ID}",destination_workload="echo"})`;
    t.equal(await settle(rec, dst, D), D, 'reporter destination: 403 with RBAC');
    t.equal(await settle(rec, `sum(istio_requests_total{reporter="source",destination_service="${SVC}",response_code="403"})`, D), D, 'reporter source: the 403 it passed on');
    t.ok((await value(rec, 'sum(skein_authorization_decisions_total{action="deny",policy=~".*deny-forbidden.*"})')) >= D, 'skein_authorization_decisions_total by policy');
  });

  await t.test('skein health and the controller, scraped', async (t) => {
    t.equal(await value(rec, 'count(skein_config_version_info{job="skein-agent"})'), 2, 'both agents say their config version');
    t.ok((await value(rec, 'sum(skein_config_updates_total{result="ack"})')) >= 2, 'configs ACKed');
    t.ok((await value(rec, 'min(skein_identity_certificate_expiry_seconds)')) > 3600, 'certificates far from expiry');
    t.equal(await value(rec, 'sum(skein_pods{state="serving"})'), 3, 'the meshed pods serve (shop: two echo, one client)');
    t.equal(await value(rec, 'skein_controller_agents_connected'), 2, 'the controller sees both agents');
    t.ok((await value(rec, 'sum(skein_ca_certificates_issued_total)')) >= 2, 'the CA\'s issuance, served at last');
    t.ok((await value(rec, 'sum(skein_controller_config_push_duration_seconds_count{result="ack"})')) >= 2, 'push latency observed');
  });
});
