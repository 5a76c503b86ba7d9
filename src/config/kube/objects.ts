/**
 * Reading Kubernetes-shaped objects defensively: every accessor names the field it looked at,
 * so a malformed object is reported as file + field + reason instead of a TypeError.
 */
import { SkeinError } from '../../errors.js';
import { ConfigCode } from '../codes.js';

/** One parsed YAML document and where it came from. */
export interface SourcedObject {
  file: string;
  /** 0-based document index inside the file. */
  doc: number;
  obj: Record<string, unknown>;
}

export type Obj = Record<string, unknown>;

export class ObjectReader {
  constructor(
    readonly src: SourcedObject,
    readonly label: string,
  ) {}

  fail(field: string, reason: string): never {
    throw new SkeinError(ConfigCode.Invalid, `${this.src.file} (document ${this.src.doc}, ${this.label}): ${field}: ${reason}`, {
      file: this.src.file,
      document: this.src.doc,
      object: this.label,
      field,
      reason,
    });
  }

  obj(parent: unknown, field: string, required = false): Obj | undefined {
    const v = get(parent, field);
    if (v === undefined || v === null) {
      if (required) this.fail(field, 'missing');
      return undefined;
    }
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'expected a mapping');
    return v as Obj;
  }

  arr(parent: unknown, field: string): unknown[] {
    const v = get(parent, field);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'expected a list');
    return v;
  }

  str(parent: unknown, field: string, required = false): string | undefined {
    const v = get(parent, field);
    if (v === undefined || v === null) {
      if (required) this.fail(field, 'missing');
      return undefined;
    }
    if (typeof v !== 'string') this.fail(field, `expected a string, got ${typeof v}`);
    return v;
  }

  port(parent: unknown, field: string, required = false): number | undefined {
    const v = get(parent, field);
    if (v === undefined || v === null) {
      if (required) this.fail(field, 'missing');
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
      this.fail(field, `expected a port number 1-65535, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  strMap(parent: unknown, field: string): Record<string, string> {
    const m = this.obj(parent, field);
    if (!m) return {};
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(m)) {
      // YAML turns `true`/`8080` into non-strings; Kubernetes would reject those, so do we.
      if (typeof v !== 'string') this.fail(`${field}.${k}`, `expected a string value, got ${typeof v}`);
      out[k] = v;
    }
    return out;
  }
}

/** Reads a dotted path (`a.b[2].c`) from a parsed object. */
export function get(parent: unknown, path: string): unknown {
  let cur: unknown = parent;
  for (const part of path.split('.')) {
    const m = /^([^[]+)((?:\[\d+\])*)$/.exec(part);
    if (!m || cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Obj)[m[1] as string];
    for (const idx of (m[2] ?? '').matchAll(/\[(\d+)\]/g)) {
      if (!Array.isArray(cur)) return undefined;
      cur = cur[Number(idx[1])];
    }
  }
  return cur;
}
