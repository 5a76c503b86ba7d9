/**
 * deploy/grafana/skein-health.json: valid JSON, a Grafana dashboard on a Prometheus data source,
 * and every PromQL expression selects only metrics, labels and response flags the agent's or the
 * controller's registry really has (scraped from registries built as their main.ts build them),
 * so a renamed metric or label fails here. Syntax is checked by promtool when it is installed.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { repoPath } from '../../../src/paths.js';
import { ResponseFlag } from '../../../src/telemetry/istio-metrics.js';
import { agentRegistry, controllerRegistry, type Family, families, seriesNames } from './scrape.js';

interface Target {
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string }[] };
}

/** Labels Prometheus adds at scrape (target labels), not the metrics' own. */
const TARGET_LABELS = new Set(['instance', 'job', 'namespace', 'pod', 'node', 'container', 'service', 'endpoint']);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'inf', 'nan']);

interface Parsed {
  /** Metric names selected. */
  metrics: string[];
  /** Label matchers (label, op, value) with the metric they are on ('' for a bare `{...}`). */
  matchers: { metric: string; label: string; op: string; value: string }[];
  /** Labels named in by/without/on/ignoring/group_x clauses. */
  grouping: string[];
}

/** A rough PromQL reading: enough to find metric names, label matchers and grouping labels. */
function parsePromql(expr: string): Parsed {
  const out: Parsed = { metrics: [], matchers: [], grouping: [] };
  let e = expr.replace(/\$\{?__\w+\}?|\$\{\w+\}|\$\w+/g, '5m');
  for (const m of e.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g)) {
    for (const x of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      out.matchers.push({ metric: m[1] ?? '', label: x[1]!, op: x[2]!, value: x[3]! });
    }
  }
  e = e.replace(/\{[^}]*\}/g, ' ').replace(/\[[^\]]*\]/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, ' ');
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_all, _kw, labels: string) => {
    out.grouping.push(...labels.split(',').map((l) => l.trim()).filter(Boolean));
    return ' ';
  });
  for (const m of e.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1]!.toLowerCase())) continue; // a function call or a keyword
    out.metrics.push(m[1]!);
  }
  return out;
}

/** Grafana's reference to the dashboard's data-source variable. */
const DATASOURCE_VAR = ['$', '{datasource}'].join('');
const dashboardPath = repoPath('deploy', 'grafana', 'skein-health.json');

t.test('parsePromql reads what the dashboard writes', async (t) => {
  const p = parsePromql('histogram_quantile(0.99, sum by (le, result) (rate(a_bucket{x="1",y=~"(.*,)?RL"}[$__rate_interval]))) / ignoring(z) b offset 5m');
  t.same(p.metrics, ['a_bucket', 'b']);
  t.same(p.grouping, ['le', 'result', 'z']);
  t.same(
    p.matchers.map((m) => `${m.metric}:${m.label}${m.op}${m.value}`),
    ['a_bucket:x=1', 'a_bucket:y=~(.*,)?RL'],
  );
});

t.test('the health dashboard uses only metrics, labels and flags the code registers', async (t) => {
  const dash = JSON.parse(readFileSync(dashboardPath, 'utf8')) as Dashboard;
  t.equal(dash.uid, 'skein-health');
  const ds = dash.templating.list.find((v) => v.type === 'datasource');
  t.equal(ds?.query, 'prometheus', 'a Prometheus data-source variable');

  const agent = agentRegistry();
  t.teardown(agent.close);
  const controller = await controllerRegistry();
  const fams = new Map<string, Family>([
    ...families(await agent.registry.metrics(), agent.registry),
    ...families(await controller.registry.metrics(), controller.registry),
  ]);
  const series = seriesNames(fams);
  t.ok(series.has('istio_requests_total') && series.has('skein_controller_config_push_duration_seconds_bucket'), 'both registries scraped');
  const flags = new Set<string>(Object.values(ResponseFlag));

  const used = new Set<string>();
  const exprs: string[] = [];
  for (const p of dash.panels) {
    t.ok(p.gridPos && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: laid out within 24 columns`);
    if (p.type === 'row') continue;
    t.equal(p.datasource?.uid, DATASOURCE_VAR, `${p.title}: on the data-source variable`);
    t.ok(p.targets?.length, `${p.title}: has queries`);
    for (const target of p.targets ?? []) {
      exprs.push(target.expr);
      const q = parsePromql(target.expr);
      t.ok(q.metrics.length > 0, `${p.title}: ${target.expr} selects a metric`);
      const labels = new Set<string>(TARGET_LABELS);
      for (const m of q.metrics) {
        const fam = series.get(m);
        t.ok(fam, `${p.title}: metric ${m} is registered by the agent or the controller`);
        if (!fam) continue;
        used.add(fam);
        for (const l of fams.get(fam)!.labels) labels.add(l);
      }
      for (const m of q.matchers) {
        const fam = fams.get(series.get(m.metric) ?? '');
        t.ok(fam?.labels.has(m.label), `${p.title}: ${m.metric} has label ${m.label}`);
        if (m.label === 'response_flags') for (const f of m.value.match(/[A-Z]+/g) ?? []) t.ok(flags.has(f), `${p.title}: response flag ${f} is one skein sets`);
      }
      for (const l of q.grouping) t.ok(labels.has(l), `${p.title}: grouping label ${l} is on ${q.metrics.join(', ')}`);
    }
  }

  // The health the dashboard is for (issue 13): each has a panel.
  for (const m of [
    'skein_controller_agents_connected',
    'skein_controller_config_version_info',
    'skein_config_version_info',
    'skein_controller_config_answers_total',
    'skein_config_updates_total',
    'skein_controller_config_push_duration_seconds',
    'skein_pods',
    'skein_identity_certificate_expiry_seconds',
    'skein_authorization_decisions_total',
    'skein_outbound_refusals_total',
    'skein_tunnel_refusals_total',
    'skein_listener_refusals_total',
    'skein_tunnel_sessions',
    'skein_tunnel_client_streams',
    'skein_tunnel_server_streams_total',
    'skein_metrics_series_dropped_total',
    'istio_requests_total',
  ]) {
    t.ok(used.has(m), `a panel shows ${m}`);
  }

  // promtool (Debian's prometheus package, which `make deps` installs) parses every expression.
  const promtool = await promisify(execFile)('promtool', ['--version']).then(
    () => true,
    () => false,
  );
  if (!promtool) {
    t.comment('promtool not installed: PromQL syntax not checked');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'skein-dash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const rules = exprs.map((expr, i) => `      - record: skein_dashboard_expr_${i}\n        expr: ${JSON.stringify(expr.replace(/\$__rate_interval/g, '1m'))}`);
  writeFileSync(join(dir, 'rules.yaml'), `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
  const checked = await promisify(execFile)('promtool', ['check', 'rules', join(dir, 'rules.yaml')]).then(
    (r) => ({ ok: true, out: r.stdout }),
    (err: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` }),
  );
  t.ok(checked.ok, `promtool parses all ${exprs.length} expressions`, { diagnostic: true, output: checked.out });
});

t.test('Istio\'s request metrics carry the labels the README lists for Istio\'s dashboards, and not the ones it says are missing', async (t) => {
  const agent = agentRegistry();
  t.teardown(agent.close);
  const fams = families(await agent.registry.metrics(), agent.registry);
  const filled = [
    'reporter',
    'source_workload',
    'source_workload_namespace',
    'source_principal',
    'source_app',
    'source_version',
    'destination_workload',
    'destination_workload_namespace',
    'destination_principal',
    'destination_app',
    'destination_version',
    'destination_service',
    'destination_service_name',
    'destination_service_namespace',
    'request_protocol',
    'response_code',
    'grpc_response_status',
    'response_flags',
    'connection_security_policy',
  ];
  const missing = ['source_canonical_service', 'source_canonical_revision', 'destination_canonical_service', 'destination_canonical_revision', 'source_cluster', 'destination_cluster'];
  for (const name of ['istio_requests_total', 'istio_request_duration_milliseconds', 'istio_request_bytes', 'istio_response_bytes']) {
    const labels = [...(fams.get(name)?.labels ?? [])].filter((l) => l !== 'le').sort();
    t.same(labels, [...filled].sort(), `${name}: Istio's standard labels`);
    for (const l of missing) t.notOk(labels.includes(l), `${name}: no ${l}`);
  }
  const tcp = filled.filter((l) => l !== 'response_code' && l !== 'grpc_response_status').sort();
  for (const name of ['istio_tcp_sent_bytes_total', 'istio_tcp_received_bytes_total', 'istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total']) {
    t.same([...(fams.get(name)?.labels ?? [])].sort(), tcp, `${name}: the standard labels without response_code and grpc_response_status`);
  }
});
