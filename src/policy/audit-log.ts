/**
 * The audit trail of authorization: every DENY, every AUDIT match and every dry-run match, one
 * JSON line each, hash-chained so that an edit, a removal or a reordering shows:
 *
 *   line n = { ...record, seq, prev: hash(n-1), hash: sha256(hash(n-1) + canonical(record, seq, prev)) }
 *
 * The first line ever has prev = 64 zeros. A restarted agent continues the chain from the last
 * line of its file; when the file was rotated away (moved, emptied), the chain continues from
 * the last hash this process wrote, so `verify` over the rotated files in order checks the
 * links between them too. `verifyAuditChain` names the first line that does not fit.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { SkeinError } from '../errors.js';
import { PolicyCode } from './codes.js';

export const GENESIS = '0'.repeat(64);

/** What one audit line says (besides seq, prev and hash). */
export interface AuditRecord {
  time: string;
  /** deny: enforced DENY (or no ALLOW matched); audit: an AUDIT policy matched; dry-run: a dry-run policy matched. */
  decision: 'deny' | 'audit' | 'dry-run';
  /** `namespace/name` of the policy, and the rule index, when one matched. */
  policy?: string;
  rule?: number;
  reason?: string;
  source?: string;
  sourceIp?: string;
  /** `namespace/name` of the destination pod, and the port. */
  workload: string;
  port: number;
  method?: string;
  host?: string;
  path?: string;
  requestId?: string;
  traceId?: string;
}

/** The hash of a line: the previous hash and the line's own fields in a fixed order. */
export function lineHash(prev: string, body: Record<string, unknown>): string {
  return createHash('sha256').update(prev).update(canonical(body)).digest('hex');
}

/** JSON with keys sorted (one spelling per record, whatever order it was written in). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The last line's (seq, hash) of an audit file, to continue its chain. */
function tail(file: string): { seq: number; hash: string } | undefined {
  if (!existsSync(file) || statSync(file).size === 0) return undefined;
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  const last = lines[lines.length - 1];
  try {
    const j = JSON.parse(last as string) as { seq?: number; hash?: string };
    if (typeof j.seq === 'number' && typeof j.hash === 'string') return { seq: j.seq, hash: j.hash };
  } catch {
    // a torn last line (crash mid-write): refuse rather than start a chain that cannot verify
  }
  throw new SkeinError(PolicyCode.AuditLogUnreadable, `${file}: the last line is not an audit record; move the file away to start a new chain`, { file });
}

export class AuditLog {
  private fd: number;
  private seq: number;
  private prev: string;
  private ino: number;

  constructor(private readonly file: string) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o750 });
    const last = tail(file);
    this.seq = last?.seq ?? 0;
    this.prev = last?.hash ?? GENESIS;
    this.fd = openSync(file, 'a', 0o640);
    this.ino = statSync(file).ino;
  }

  /**
   * Appends one record. Synchronous on purpose: the chain is only as good as its order, and a
   * line is on disk (in the page cache) before the decision it records takes effect.
   */
  write(rec: AuditRecord): void {
    this.reopenIfRotated();
    const body: Record<string, unknown> = { ...rec, seq: this.seq + 1, prev: this.prev };
    const hash = lineHash(this.prev, body);
    writeSync(this.fd, `${JSON.stringify({ ...body, hash })}\n`);
    this.seq++;
    this.prev = hash;
  }

  /** logrotate moved the file away: continue the chain in a new file at the same path. */
  private reopenIfRotated(): void {
    let ino: number | undefined;
    try {
      ino = statSync(this.file).ino;
    } catch {
      ino = undefined;
    }
    if (ino === this.ino) return;
    closeSync(this.fd);
    this.fd = openSync(this.file, 'a', 0o640);
    this.ino = statSync(this.file).ino;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export interface ChainProblem {
  file: string;
  /** 1-based line number in that file. */
  line: number;
  reason: string;
}

export interface ChainResult {
  ok: boolean;
  lines: number;
  problem?: ChainProblem;
}

/**
 * Checks files of one chain, oldest first: every line's hash, and that each line's `prev` is
 * the hash of the line before it (across files too). The first line must start the chain
 * (seq 1 after 64 zeros) unless `continued` (the files are a later part of a chain whose older
 * files are gone). What no chain can show: lines cut from the end of the newest file.
 */
export function verifyAuditChain(files: { name: string; text: string }[], opts: { continued?: boolean } = {}): ChainResult {
  let prev: string | undefined;
  let prevSeq: number | undefined;
  let lines = 0;
  for (const f of files) {
    const rows = f.text.split('\n');
    if (rows[rows.length - 1] === '') rows.pop();
    for (let i = 0; i < rows.length; i++) {
      const at = { file: f.name, line: i + 1 };
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(rows[i] as string) as Record<string, unknown>;
      } catch {
        return { ok: false, lines, problem: { ...at, reason: 'not a JSON record' } };
      }
      const { hash, ...body } = j;
      if (typeof hash !== 'string' || typeof body.prev !== 'string' || typeof body.seq !== 'number') {
        return { ok: false, lines, problem: { ...at, reason: 'not an audit record (seq, prev, hash missing)' } };
      }
      if (lineHash(body.prev, body) !== hash) return { ok: false, lines, problem: { ...at, reason: 'altered: its hash does not match its content' } };
      if (prev !== undefined && body.prev !== prev) {
        return { ok: false, lines, problem: { ...at, reason: `broken link: prev is not the hash of the line before (a line was removed, inserted or reordered before this one; seq ${body.seq} after ${prevSeq})` } };
      }
      if (prev === undefined && !opts.continued && (body.seq !== 1 || body.prev !== GENESIS)) {
        return { ok: false, lines, problem: { ...at, reason: `the chain does not start here (seq ${body.seq}): lines before it were removed, or pass --continued for a later part of a chain` } };
      }
      prev = hash;
      prevSeq = body.seq;
      lines++;
    }
  }
  return { ok: true, lines };
}
