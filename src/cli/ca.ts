/**
 * `skein ca status` and `skein ca rotate`: the mesh CA's roots and an operator-driven root
 * rotation (src/controller/ca-rotation.ts holds the steps; this drives them and waits).
 *
 *   skein ca status [--json]  [--controller H:P --token-file F --roots F | --lab ID]
 *   skein ca rotate [--timeout 5m] [--dry-run] [--json]  [same access flags; the operator token]
 *
 * Every step is idempotent: after an interruption, running `skein ca rotate` again reads the
 * rotation's phase from the controller and continues from there.
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import type { CaStatus } from '../api/config-wire.js';
import { ControllerCode } from '../controller/codes.js';
import { fetchCaStatus, rotateCaStep, type StatusClientOptions } from '../controller/status-client.js';
import { messageOf } from '../errors.js';
import { pemBlocks } from '../identity/x509/pem.js';
import { CONTROLLER_OPTIONS, reachController } from './controller-access.js';
import { table } from './lab-format.js';

const USAGE = `usage: skein ca status [--json]
       skein ca rotate [--timeout DURATION] [--dry-run] [--json]

  rotate      add a new root to the bundle, wait until every agent trusts it,
              switch signing to it, make every agent re-issue its workload certificates and
              wait until they chain to the new root, remove the old root, wait until every
              agent dropped it. Re-run after an interruption to continue.
  --timeout   how long to wait for the agents at each step (default 5m; 90s, 2m, 300 = seconds)
  --dry-run   print what would be done from the current state, change nothing
  --json      machine-readable output (rotate: one summary line at the end)

access: --controller HOST:PORT --token-file FILE --roots FILE (rotate needs the operator
token, the controller's --operator-token-file), or in a lab: --lab ID
`;

/** "5m", "90s", "300" (seconds), "1h" -> ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`not a duration: "${text}" (e.g. 90s, 5m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

/** AB:CD:EF:01… — enough of a fingerprint for a human to tell roots apart. */
export function shortId(id: string): string {
  return id ? `${id.slice(0, 11)}…` : '-';
}

export async function caCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (sub !== 'status' && sub !== 'rotate') {
    process.stderr.write(USAGE);
    return 2;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: rest,
      options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean', default: false }, timeout: { type: 'string' }, 'dry-run': { type: 'boolean', default: false } },
    }).values;
  } catch (err) {
    process.stderr.write(`skein ca: ${messageOf(err)}\n${USAGE}`);
    return 2;
  }
  const own = [
    ...(values.json ? ['--json'] : []),
    ...(values['dry-run'] ? ['--dry-run'] : []),
    ...(typeof values.timeout === 'string' ? ['--timeout', values.timeout] : []),
  ];
  let timeoutMs = 5 * 60_000;
  try {
    if (typeof values.timeout === 'string') timeoutMs = parseDuration(values.timeout);
  } catch (err) {
    process.stderr.write(`skein ca: --timeout: ${messageOf(err)}\n`);
    return 2;
  }
  const target = reachController(['ca', sub], values as never, own, USAGE, { operator: true });
  if (typeof target === 'number') return target;
  try {
    if (sub === 'status') {
      const st = await fetchCaStatus(target);
      process.stdout.write(values.json ? `${JSON.stringify(st, null, 2)}\n` : renderCaStatus(st));
      return 0;
    }
    return await rotate(new ControllerLink(target), { timeoutMs, dryRun: values['dry-run'] === true, json: values.json === true });
  } catch (err) {
    process.stderr.write(`skein ca ${sub}: ${grpcDetails(err)}\n`);
    return 1;
  }
}

function grpcDetails(err: unknown): string {
  const e = err as Partial<grpc.ServiceError>;
  return e.details ?? messageOf(err);
}

/**
 * The controller, asked with roots that follow the rotation: the roots file given, plus the
 * bundle the controller last reported over a connection those roots verified. Without it the
 * command would lose the controller the moment it switches to the new root.
 */
export class ControllerLink {
  private extraRoots: string[] = [];
  constructor(private readonly base: StatusClientOptions) {}

  private opts(): StatusClientOptions {
    const given = this.base.rootsPem === undefined ? [] : pemBlocks(Array.isArray(this.base.rootsPem) ? this.base.rootsPem.join('') : this.base.rootsPem);
    return { ...this.base, rootsPem: [...new Set([...given, ...this.extraRoots])] };
  }

  private learn(st: CaStatus): CaStatus {
    this.extraRoots = [...new Set([...this.extraRoots, ...(st.bundle_pem ?? [])])];
    return st;
  }

  async status(): Promise<CaStatus> {
    return this.learn(await fetchCaStatus(this.opts()));
  }

  async step(step: string): Promise<CaStatus> {
    return this.learn(await rotateCaStep(this.opts(), step));
  }
}

interface StepFigure {
  step: string;
  ms: number;
}

/** What the command does from `phase` on (the dry run prints it; the run follows it). */
export function planFrom(phase: string | undefined): string[] {
  switch (phase) {
    case 'trusting':
      return ['wait: every agent trusts the new root', 'activate', 'reissue + wait', 'retire + wait', 'finish'];
    case 'reissuing':
      return ['reissue + wait', 'retire + wait', 'finish'];
    case 'retiring':
      return ['wait: every agent dropped the old root', 'finish'];
    default:
      return ['add + wait: every agent trusts the new root', 'activate', 'reissue + wait', 'retire + wait', 'finish'];
  }
}

async function rotate(link: ControllerLink, o: { timeoutMs: number; dryRun: boolean; json: boolean }): Promise<number> {
  const say = (line: string) => {
    if (!o.json) process.stdout.write(`skein ca rotate: ${line}\n`);
  };
  let st = await link.status();
  if (!st.rotatable) {
    process.stderr.write(`skein ca rotate: ${ControllerCode.RotationNotRotatable}: ${st.note || 'this CA cannot be rotated here'}\n`);
    return 1;
  }
  const phase = st.rotation?.phase && st.rotation.phase !== 'done' ? st.rotation.phase : undefined;
  if (o.dryRun) {
    const active = st.authorities.find((a) => a.active);
    const lines = [
      `signing root ${active?.id ?? '-'}; ${st.authorities.length} root(s) in the bundle; ${st.agents.length} agent(s) connected`,
      phase ? `a rotation is under way (phase ${phase}, ${shortId(st.rotation!.from)} -> ${shortId(st.rotation!.to)}): it would continue` : 'no rotation under way: a new one would start',
      ...planFrom(phase).map((s, i) => `  ${i + 1}. ${s}`),
    ];
    if (o.json) process.stdout.write(`${JSON.stringify({ dryRun: true, phase: phase ?? '', plan: planFrom(phase), agents: st.agents.length })}\n`);
    else for (const l of lines) say(l);
    return 0;
  }
  const figures: StepFigure[] = [];
  const t0 = Date.now();
  const timed = async (step: string, f: () => Promise<void>) => {
    const s0 = Date.now();
    await f();
    figures.push({ step, ms: Date.now() - s0 });
    say(`${step}: done in ${((Date.now() - s0) / 1000).toFixed(1)} s`);
  };
  try {
    if (phase) say(`continuing the rotation under way (phase ${phase})`);
    if (!phase || phase === 'trusting') {
      await timed('add', async () => {
        st = await link.step('add');
        say(`new root ${st.rotation?.to} in the bundle (old root ${st.rotation?.from} still signs)`);
        st = await waitAgents(link, 'trust the new root', o.timeoutMs, say);
      });
      await timed('activate', async () => {
        st = await stepWhenConverged(link, 'activate', 'trust the new root', o.timeoutMs, say);
        say(`new root ${st.rotation?.to} signs`);
      });
    }
    if (!phase || phase === 'trusting' || phase === 'reissuing') {
      await timed('reissue', async () => {
        st = await link.step('reissue');
        st = await waitAgents(link, 'hold workload certificates of the new root only', o.timeoutMs, say);
      });
      await timed('retire', async () => {
        st = await stepWhenConverged(link, 'retire', 'hold workload certificates of the new root only', o.timeoutMs, say);
        say(`old root ${st.rotation?.from} removed from the bundle`);
        st = await waitAgents(link, 'drop the old root', o.timeoutMs, say);
      });
    } else {
      await timed('retire', async () => {
        st = await waitAgents(link, 'drop the old root', o.timeoutMs, say);
      });
    }
    await timed('finish', async () => {
      st = await stepWhenConverged(link, 'finish', 'drop the old root', o.timeoutMs, say);
    });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const msg = grpcDetails(err);
    process.stderr.write(`skein ca rotate: ${code && !msg.startsWith(code) ? `${code}: ` : ''}${msg}\n`);
    process.stderr.write('skein ca rotate: stopped in a safe state (every agent still trusts the roots its peers use); run it again to continue\n');
    if (o.json) process.stdout.write(`${JSON.stringify({ ok: false, code: code ?? '', error: msg, steps: figures, phase: st.rotation?.phase ?? '' })}\n`);
    return 1;
  }
  const total = Date.now() - t0;
  say(`rotation done in ${(total / 1000).toFixed(1)} s: signing root ${st.rotation?.to}; ${st.agents.length} agent(s) on it`);
  if (o.json) {
    process.stdout.write(
      `${JSON.stringify({ ok: true, from: st.rotation?.from, to: st.rotation?.to, totalMs: total, steps: figures, agents: st.agents.map((a) => a.node) })}\n`,
    );
  }
  return 0;
}

/**
 * Waits until no agent is pending for the current phase, asking the controller to re-signal
 * the agents not there yet every few seconds (a signal lost with a reconnect is sent again).
 */
async function waitAgents(link: ControllerLink, what: string, timeoutMs: number, say: (l: string) => void): Promise<CaStatus> {
  const deadline = Date.now() + timeoutMs;
  let st: CaStatus | undefined;
  let lastLine = '';
  let lastNudge = Date.now();
  for (;;) {
    try {
      if (Date.now() - lastNudge > 3000) {
        st = await link.step('nudge');
        lastNudge = Date.now();
      } else st = await link.status();
    } catch (err) {
      // A controller restarting mid-rotation comes back with the rotation's phase: keep waiting.
      const code = (err as Partial<grpc.ServiceError>).code;
      if (code !== grpc.status.UNAVAILABLE && code !== grpc.status.DEADLINE_EXCEEDED) throw err;
      const line = `controller unreachable (${grpcDetails(err)}); retrying`;
      if (line !== lastLine) say(line);
      lastLine = line;
      if (Date.now() > deadline) throw Object.assign(new Error(`the controller stayed unreachable for ${Math.round(timeoutMs / 1000)} s`), { code: ControllerCode.RotationTimeout });
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (st.pending.length === 0) {
      say(`all ${st.agents.length} agent(s) ${what}`);
      return st;
    }
    const line = `waiting for ${st.pending.length} agent(s) to ${what}: ${st.pending.join(', ')}`;
    if (line !== lastLine) say(line);
    lastLine = line;
    if (Date.now() > deadline) {
      const pending = st.pending;
      const detail = st.agents
        .filter((a) => pending.includes(a.node))
        .map((a) => `${a.node} trusts [${a.trusted_roots.map(shortId).join(', ')}], certificates on [${a.certificates.map((c) => shortId(c.root)).join(', ')}]`)
        .join('; ');
      throw Object.assign(new Error(`agents did not ${what} within ${Math.round(timeoutMs / 1000)} s: ${pending.join(', ')}${detail ? ` (${detail})` : ''}`), {
        code: ControllerCode.RotationTimeout,
      });
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Runs `step`; refused because an agent (re)joined unconverged, waits for it and tries again. */
async function stepWhenConverged(link: ControllerLink, step: string, what: string, timeoutMs: number, say: (l: string) => void): Promise<CaStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await link.step(step);
    } catch (err) {
      const details = grpcDetails(err);
      if (!details.startsWith(ControllerCode.RotationNotConverged) || Date.now() > deadline) throw err;
      say(`${step} refused for now (${details}); waiting`);
      await waitAgents(link, what, Math.max(1000, deadline - Date.now()), say);
    }
  }
}

/** The text `skein ca status` prints. */
export function renderCaStatus(st: CaStatus): string {
  const out: string[] = [];
  out.push(
    table([
      ['ROOT', 'SIGNS', 'SUBJECT', 'NOT AFTER'],
      ...st.authorities.map((a) => [a.id, a.active ? 'yes' : 'no', a.subject.replace(/\n/g, ', '), a.not_after]),
    ]),
    '',
  );
  const r = st.rotation;
  if (!r) out.push('rotation: never rotated');
  else if (r.phase === 'done') out.push(`rotation: last one done at ${r.completed_at} (${shortId(r.from)} -> ${shortId(r.to)})`);
  else out.push(`rotation: phase ${r.phase} since ${r.updated_at} (${shortId(r.from)} -> ${shortId(r.to)}), waiting for: ${st.pending.length ? st.pending.join(', ') : 'nobody (next step can run)'}`);
  if (st.note) out.push(`note: ${st.note}`);
  out.push('');
  out.push(
    st.agents.length
      ? table([
          ['AGENT', 'TRUSTS', 'CERTIFICATES (IDENTITY -> ROOT)', 'REPORTED'],
          ...st.agents.map((a) => [
            a.node,
            a.trusted_roots.map(shortId).join(', ') || '-',
            a.certificates.map((c) => `${c.identity.replace(/^spiffe:\/\/[^/]+\//, '')} -> ${c.root ? shortId(c.root) : 'untrusted'}`).join(', ') || '-',
            a.reported_at || 'no report yet',
          ]),
        ])
      : 'no agent connected',
  );
  return `${out.join('\n')}\n`;
}
