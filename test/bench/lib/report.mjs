/**
 * The bench's results as text tables: latency at each constant rate (and what each mode adds
 * over direct), cost per mode (max throughput, proxy CPU per 1000 requests, peak RSS), the key
 * ratios skein/direct and skein/HAProxy from the same run, and L4 bulk throughput.
 * Every cell that was not measured says why ("not run", "failed"), never a made-up number.
 */

function fmt(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  return v.toFixed(digits);
}

function signed(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  return `${v >= 0 ? '+' : ''}${fmt(v, digits)}`;
}

function ratio(a, b, digits = 2) {
  // A negative numerator (an added latency below the baseline: noise) has no meaningful ratio.
  if (a === null || a === undefined || b === null || b === undefined || !(b > 0) || a < 0) return '—';
  return `${(a / b).toFixed(digits)}x`;
}

function table(headers, rows) {
  const all = [headers, ...rows].map((r) => r.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...all.map((r) => r[i]?.length ?? 0)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(all[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...all.slice(1).map(line)].join('\n');
}

const PCTS = ['p50', 'p90', 'p99', 'p999'];

function failCell(f) {
  if (!f) return '0';
  const detail = Object.entries(f.errors ?? {})
    .map(([k, v]) => `${k}:${v}`)
    .join(',');
  return f.failed ? `${f.failed}${detail ? ` (${detail})` : ''}` : '0';
}

/**
 * A run that lost more than 1% of its requests was beyond what its path (or the machine) can
 * carry at that rate: its percentiles describe a queue, not the path, so nothing is subtracted
 * from or divided by them.
 */
export function overloaded(r) {
  return !r || r.measured === 0 || r.failed > 0.01 * r.measured;
}

/** Added latency of `r` over `base` at the same percentile (ms), null when either is missing. */
export function added(r, base, p) {
  const a = r?.latencyMs?.[p];
  const b = base?.latencyMs?.[p];
  return a === null || a === undefined || b === null || b === undefined ? null : a - b;
}

function statusOf(mode) {
  if (mode.notRun) return `not run: ${mode.notRun}`;
  if (mode.error) return `failed: ${mode.error}`;
  return null;
}

export function renderReport(res) {
  const out = [];
  const modes = res.modes;
  const byId = Object.fromEntries(modes.map((m) => [m.id, m]));
  out.push(`skein bench ${res.startedAt}  ${res.quick ? 'QUICK' : 'full'}  machine: ${res.machine.cpus}x ${res.machine.cpuModel}, ${res.machine.kernel}, node ${res.machine.node}`);
  out.push(`workload: HTTP/1.1 GET ${res.params.httpPath} (L4 modes carry the same HTTP/1.1 as opaque TCP); gRPC unary Echo/Unary (empty message)`);
  out.push(`client pod on node-a, ${res.params.echoReplicas} echo pods on node-b; latency from the intended send time (open loop), warmup ${res.params.openWarmupS}s + ${res.params.openDurationS}s per rate`);

  for (const rate of res.params.rates) {
    out.push('');
    out.push(`== constant ${rate} req/s: latency (ms) and added latency over direct (ms) ==`);
    const rows = modes
      .filter((m) => !m.rates || m.rates.includes(rate))
      .map((m) => {
        const st = statusOf(m);
        const r = m.open?.[rate];
        if (st && !r) return [m.id, st, '', '', '', '', '', '', '', '', '', ''];
        const base = byId[m.baseline]?.open?.[rate];
        const isBase = m.id === m.baseline;
        return [
          m.id,
          ...PCTS.map((p) => fmt(r?.latencyMs?.[p])),
          ...PCTS.map((p) => (isBase ? '(base)' : overloaded(base) ? 'base over' : overloaded(r) ? 'over' : signed(added(r, base, p)))),
          r ? `${fmt(r.achievedRate, 0)}` : '—',
          r ? fmt(r.sendLagMs?.p99) : '—',
          r ? failCell(r) : '—',
        ];
      });
    out.push(table(['mode', 'p50', 'p90', 'p99', 'p99.9', '+p50', '+p90', '+p99', '+p99.9', 'ok/s', 'gen lag p99', 'failed'], rows));
  }

  out.push('');
  out.push(`== per mode: closed-loop max throughput, proxy cost (both nodes' proxies together) ==`);
  const costRows = modes
    .filter((m) => !m.skipClosed)
    .map((m) => {
      const st = statusOf(m);
      if (st && !m.closed && !m.open) return [m.id, st, '', '', '', '', ''];
      const first = m.open?.[res.params.rates[0]];
      return [
        m.id,
        m.closed ? fmt(m.closed.rps, 0) : m.closedError ? `failed: ${m.closedError}` : '—',
        m.closed ? failCell(m.closed) : '—',
        m.kind === 'direct' ? 'n/a' : fmt(first?.proxyCpuPer1k, 3),
        m.kind === 'direct' ? 'n/a' : fmt(m.closed?.proxyCpuPer1k, 3),
        m.kind === 'direct' ? 'n/a' : fmt(m.peakRssBytes / 2 ** 20, 1),
        m.verified?.ok ? 'yes' : `NO: ${m.verified?.reason ?? 'not checked'}`,
      ];
    });
  out.push(
    table(
      ['mode', 'max req/s', 'failed', `CPU s/1k req @${res.params.rates[0]}/s`, 'CPU s/1k req @max', 'peak RSS MiB', 'path verified'],
      costRows,
    ),
  );

  out.push('');
  out.push('== key ratios (same run): skein / direct and skein / HAProxy ==');
  const ratioRows = [];
  for (const m of modes.filter((x) => x.kind === 'skein')) {
    const base = byId[m.baseline];
    const peer = byId[m.peer];
    const r = res.params.rates;
    const cpu = (x) => x?.open?.[r[0]]?.proxyCpuPer1k;
    const addedVsPeer = (rate) => {
      const [a, b, c] = [m.open?.[rate], base?.open?.[rate], peer?.open?.[rate]];
      if (overloaded(b)) return 'direct over';
      if (overloaded(a) && overloaded(c)) return 'both over';
      if (overloaded(a)) return 'skein over';
      if (overloaded(c)) return 'HAProxy over';
      return ratio(added(a, b, 'p99'), added(c, b, 'p99'));
    };
    const p99VsDirect = (rate) => {
      const [a, b] = [m.open?.[rate], base?.open?.[rate]];
      if (overloaded(b)) return 'direct over';
      if (overloaded(a)) return 'skein over';
      return ratio(a.latencyMs.p99, b.latencyMs.p99);
    };
    ratioRows.push([
      m.id,
      m.notRun ? `not run: ${m.notRun}` : p99VsDirect(r[0]),
      ...r.map(addedVsPeer),
      ratio(m.closed?.rps, base?.closed?.rps),
      ratio(m.closed?.rps, peer?.closed?.rps),
      ratio(cpu(m), cpu(peer)),
      ratio(m.peakRssBytes, peer?.peakRssBytes),
      `${m.peer}`,
    ]);
  }
  out.push(
    table(
      [
        'skein mode',
        `p99 @${res.params.rates[0]}/s vs direct`,
        ...res.params.rates.map((rate) => `added p99 @${rate}/s vs HAProxy`),
        'max req/s vs direct',
        'max req/s vs HAProxy',
        'CPU/1k req vs HAProxy',
        'peak RSS vs HAProxy',
        'peer',
      ],
      ratioRows,
    ),
  );

  out.push('');
  out.push('(gen lag: how late the generator itself sent requests (p99, ms); it is part of every latency above, in every mode alike)');
  out.push('(— : a value missing, or an added latency that is not positive (within noise); "over": that run lost >1% of its requests, i.e. the rate is beyond its capacity here)');

  if (res.bulk) {
    out.push('');
    out.push(`== L4 bulk TCP (${res.params.bulkDurationS}s per run, Gbit/s confirmed by the receiving sink) ==`);
    const b = res.bulk;
    const direct = b.modes.find((x) => x.id === 'direct');
    const peer = b.modes.find((x) => x.id === 'haproxy-l4');
    const rows = b.modes.map((x) => {
      if (x.notRun) return [x.id, `not run: ${x.notRun}`, '', '', '', '', '', ''];
      const cells = [x.id];
      for (const s of b.streams) {
        const r = x.runs?.[s];
        cells.push(r ? `${fmt(r.gbps, 2)}${r.failed ? ` (${failCell(r)} failed)` : ''}` : x.error ? `failed: ${x.error}` : '—');
      }
      for (const s of b.streams) {
        const r = x.runs?.[s];
        cells.push(x.id === 'direct' ? '(base)' : `${ratio(r?.gbps, direct?.runs?.[s]?.gbps)} / ${x.id === 'haproxy-l4' ? '—' : ratio(r?.gbps, peer?.runs?.[s]?.gbps)}`);
      }
      cells.push(x.id === 'direct' ? 'n/a' : fmt(x.cpuPerGB, 2));
      cells.push(x.verified?.ok ? 'yes' : `NO: ${x.verified?.reason ?? 'not checked'}`);
      return cells;
    });
    out.push(
      table(
        ['mode', ...b.streams.map((s) => `${s} stream${s > 1 ? 's' : ''} Gbit/s`), ...b.streams.map((s) => `${s}: vs direct / vs HAProxy`), 'proxy CPU s/GB', 'path verified'],
        rows,
      ),
    );
  }
  if (res.notes.length) {
    out.push('');
    out.push('notes:');
    for (const n of res.notes) out.push(`  - ${n}`);
  }
  out.push('');
  out.push(`total ${res.totalSeconds?.toFixed(0) ?? '?'} s; JSON: ${res.jsonFile}`);
  return out.join('\n');
}
